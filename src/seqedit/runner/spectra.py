"""Singular spectra of the edited matrices at a run's checkpoints, rebuilt from its ledger.

The run's own weights are replayed exactly (the unedited model plus every step's stored update, in order,
as a resume does), and at step 0 and every checkpoint step the full spectrum of each matrix the run has
changed is written to ``spectra.jsonl`` (one row per step and matrix: the singular values and
:meth:`seqedit.monitor.spectra.Spectrum.summary`). Working from the ledger means it can be computed for any
run that kept one, at any time after the run, without changing how the run measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqedit import rundir
from seqedit.models.loading import LoadedModel
from seqedit.monitor.spectra import spectrum
from seqedit.runner.config import load_config
from seqedit.runner.store import RunStore
from seqedit.utils.io import strict_json, write_text_atomic

SPECTRA_TABLE = rundir.SPECTRA


def checkpoint_steps(store: RunStore) -> list[int]:
    """Steps at which the run measured checkpoints (step 0 included), up to its last completed step."""
    completed = int(store.read_progress().get("completed_steps", 0))
    steps = {int(r["step"]) for r in store.read(rundir.CHECKPOINTS) if int(r["step"]) <= completed}
    return sorted(steps | {0})


def run_spectra(run_dir: str | Path, lm: LoadedModel | None = None) -> Path:
    """Write ``spectra.jsonl`` of a run directory (replacing an older one); returns its path."""
    store = RunStore(run_dir)
    config = load_config(store.config_path)
    if lm is None:
        from seqedit.models import load

        lm = load(config.model, dtype=config.dtype, device="cpu")
    wanted = checkpoint_steps(store)
    completed = wanted[-1]
    n_edits = {int(r["step"]): int(r["n_edits"]) for r in store.read(rundir.TIMINGS)}
    paths = {f"{info.path}.weight": info for info in lm.adapter.matrices("all")}
    changed: set[str] = set()
    originals: dict[str, torch.Tensor] = {}
    rows: list[dict[str, Any]] = []
    try:
        for step in range(completed + 1):
            if step > 0:
                result = store.load_ledger(step)
                for name in result.deltas:
                    originals.setdefault(name, dict(lm.model.named_parameters())[name].detach().clone())
                changed |= set(result.deltas)
                result.replay(lm.model)
            if step in wanted and step > 0:
                params = dict(lm.model.named_parameters())
                rows += [_row(step, n_edits.get(step, 0), name, params[name], paths) for name in sorted(changed)]
    finally:  # leave a caller's model as it was given
        params = dict(lm.model.named_parameters())
        with torch.no_grad():
            for name, original in originals.items():
                params[name].copy_(original)
    # step 0: the unedited spectra of the matrices the run changes
    rows = [_row(0, 0, name, originals[name], paths) for name in sorted(changed)] + rows
    path = store.root / rundir.jsonl(SPECTRA_TABLE)
    write_text_atomic(path, "".join(strict_json(r) + "\n" for r in rows))
    return path


def _row(step: int, n_edits: int, name: str, weight: torch.Tensor, paths: dict[str, Any]) -> dict[str, Any]:
    info = paths.get(name)
    s = spectrum(weight)
    return {"step": step, "n_edits": n_edits, "matrix": info.path if info else name,
            "layer": info.layer if info else None, "kind": info.kind if info else None,
            **s.summary(), "singular_values": list(s.singular_values)}
