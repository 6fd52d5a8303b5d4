"""Edited models as Hugging Face directories: ``seqedit export`` (a run at a step) and ``seqedit apply``
(a run's or an ``EditResult``'s deltas on a base model).

The weight updates of a run live in its ledger. :func:`cumulative_deltas` is the one place that reads them,
so a change of the ledger's storage format is adapted here alone. The deltas of all steps are summed in
float64 and added once, so an exported matrix equals the run's in-memory matrix up to float rounding
(the run adds step after step); every parameter that no step changed is written bit for bit as loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from seqedit.editors.base import EditResult
from seqedit.models.loading import LoadedModel, load
from seqedit.runner.config import load_config
from seqedit.runner.store import RunDirectoryError, RunStore
from seqedit.utils.io import write_text_atomic

EXPORT_INFO = "seqedit_export.json"


def cumulative_deltas(run_dir: str | Path, step: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """The total weight change of a run after ``step`` (default: its last completed step), by parameter
    name in native layout and dtype, and the step used. Raises RunDirectoryError when the ledger cannot
    rebuild that step."""
    store = RunStore(run_dir)
    completed = int(store.read_progress()["completed_steps"])
    step = completed if step is None else step
    if not 0 <= step <= completed:
        raise RunDirectoryError(f"{store.root}: step {step} is not between 0 and the last completed step {completed}")
    totals: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for index in range(1, step + 1):
        for name, delta in store.load_ledger(index).deltas.items():
            dtypes.setdefault(name, delta.dtype)
            totals[name] = totals.get(name, 0) + delta.to(torch.float64)
    return {name: total.to(dtypes[name]) for name, total in totals.items()}, step


def read_deltas(source: str | Path, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Deltas from a run directory (cumulative up to ``step``) or from a saved ``EditResult`` file, with a
    description of where they came from."""
    path = Path(source)
    if path.is_dir():
        deltas, used = cumulative_deltas(path, step)
        return deltas, {"run_dir": str(path.resolve()), "step": used}
    if path.is_file():
        if step is not None:
            raise ValueError(f"{path}: --step applies to run directories, not to an EditResult file")
        result = EditResult.load(path)
        return result.deltas, {"edit_result": str(path.resolve()), "method": result.method}
    raise FileNotFoundError(f"{path}: neither a run directory nor an EditResult (.safetensors) file")


@torch.no_grad()
def apply_deltas(lm: LoadedModel, deltas: Mapping[str, torch.Tensor]) -> None:
    """Add ``deltas`` to the model's parameters in place, after checking every name and shape."""
    params = dict(lm.model.named_parameters(remove_duplicate=False))
    for name, delta in deltas.items():
        if name not in params:
            raise ValueError(f"delta for '{name}', a parameter the model {lm.name} does not have")
        if tuple(params[name].shape) != tuple(delta.shape):
            raise ValueError(
                f"delta for '{name}' has shape {tuple(delta.shape)}, the model's parameter {tuple(params[name].shape)}"
            )
    for name, delta in deltas.items():
        params[name].add_(delta.to(device=params[name].device, dtype=params[name].dtype))


def save_model(lm: LoadedModel, out_dir: str | Path, info: Mapping[str, Any]) -> Path:
    """Write model (safetensors), config, tokenizer and ``seqedit_export.json`` (provenance) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm.pretrained.save_pretrained(out, safe_serialization=True)
    lm.tokenizer.save_pretrained(out)
    write_text_atomic(out / EXPORT_INFO, json.dumps(dict(info), indent=2, default=str) + "\n")
    return out


def apply_to_model(
    source: str | Path, base: str | LoadedModel, out_dir: str | Path, *, step: int | None = None
) -> Path:
    """``seqedit apply``: load ``base`` (a name or a loaded model), add the deltas of ``source``, save."""
    deltas, origin = read_deltas(source, step)  # before loading the model: bad input fails fast
    lm = base if isinstance(base, LoadedModel) else load(base)
    return _apply_and_save(lm, deltas, origin, out_dir)


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, step: int | None = None, base: LoadedModel | None = None
) -> Path:
    """``seqedit export``: the run's model after ``step`` (default: the last completed step). The base
    model is the run's own (``model``, ``dtype`` of its config, loaded on the CPU) unless ``base`` is given."""
    config = load_config(RunStore(run_dir).config_path)
    if not config.save_ledger:
        raise RunDirectoryError(f"{run_dir}: the run was made with save_ledger: false, so its weights cannot be rebuilt")
    deltas, origin = read_deltas(run_dir, step)
    lm = base if base is not None else load(config.model, dtype=config.dtype, device="cpu")
    return _apply_and_save(lm, deltas, origin, out_dir)


def _apply_and_save(lm: LoadedModel, deltas: Mapping[str, torch.Tensor], origin: Mapping[str, Any], out_dir: str | Path) -> Path:
    apply_deltas(lm, deltas)
    info = {**origin, "base_model": lm.name, "base_source": lm.source, "changed_parameters": sorted(deltas)}
    return save_model(lm, out_dir, info)
