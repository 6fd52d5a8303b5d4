"""The sequential editing loop: edit batch after batch, measure, record, and resume after a crash.

Determinism: before every editor call and every checkpoint, all random generators are seeded from
``(config.seed, step)``, and a resumed run rebuilds the model by re-adding the stored weight deltas in
order (bit-identical), so a resumed run ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditError, Editor, EditResult
from seqedit.editors.registry import create_editor, make_config
from seqedit.models.loading import LoadedModel, load
from seqedit.runner.config import ConfigError, RunConfig, config_to_yaml, load_config
from seqedit.runner.measure import Measurements
from seqedit.runner.progress import StepProgress
from seqedit.runner.requests import select_requests
from seqedit.runner.store import RunStore, environment_info
from seqedit.runner.summary import summarise
from seqedit.runner.trackers import tracked
from seqedit.utils.torch_utils import seed_everything


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    completed_steps: int
    n_edits: int
    message: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


def validate_before_work(config: RunConfig) -> None:
    """Reject what can be rejected without loading anything (method, hyper-parameters)."""
    try:
        make_config(config.method, None, config.hparams)
    except ValueError as exc:  # unknown method, or pydantic's ValidationError (a ValueError)
        raise ConfigError(f"field 'hparams' / 'method': {exc}") from exc


def _step_seed(config: RunConfig, step: int) -> int:
    return config.seed * 1_000_003 + step


def _finite(model: torch.nn.Module, names: Sequence[str]) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    return all(bool(torch.isfinite(params[n]).all()) for n in names)


class SequentialRun:
    """One sequential editing experiment bound to its run directory."""

    def __init__(
        self,
        config: RunConfig,
        *,
        lm: LoadedModel | None = None,
        show_progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.store = RunStore(config.output_dir)
        self._lm = lm
        self.show_progress = show_progress
        self.log = log or (lambda message: print(message, file=sys.stderr))

    # ------------------------------------------------------------------ setup
    def _load_model(self) -> LoadedModel:
        if self._lm is None:
            self._lm = load(self.config.model, dtype=self.config.dtype, device=self.config.device)
        return self._lm

    def _batches(self, requests: Sequence[EditRequest]) -> list[list[EditRequest]]:
        size = self.config.batch_size
        return [list(requests[i : i + size]) for i in range(0, len(requests), size)]

    # ------------------------------------------------------------------ main entry
    def execute(self, *, resume: bool = False, max_steps: int | None = None) -> RunOutcome:
        """Run (or resume) to the end, or for at most ``max_steps`` more steps."""
        validate_before_work(self.config)
        selection = select_requests(self.config)
        planned = selection.edits
        completed = 0
        if resume:
            progress = self.store.read_progress()
            completed = int(progress["completed_steps"])
            if progress["status"] == "finished":
                self.log(f"{self.store.root}: already finished")
                return RunOutcome(self.store.root, "finished", completed, int(progress["n_edits"]))
            self._check_same_config()
            self.store.truncate_after(completed)
        lm = self._load_model()
        if not resume:
            self.store.create(config_to_yaml(self.config), environment_info(lm))
        editor = create_editor(self.config.method, lm, self.config.hparams)
        measurements = Measurements(lm, self.config, planned, selection.probes)
        batches = self._batches(planned)
        if resume and completed > 0:
            self._restore(lm, editor, measurements, completed)
        else:
            seed_everything(_step_seed(self.config, 0))
            self.store.append("norms", measurements.start())
            self.store.append("checkpoints", measurements.checkpoint(0, 0, [], []))
            self._save_states(editor, measurements, 0)
        return self._loop(lm, editor, measurements, batches, planned, completed, max_steps)

    def _check_same_config(self) -> None:
        stored = load_config(self.store.config_path).model_dump(mode="json", exclude={"output_dir"})
        if stored != self.config.model_dump(mode="json", exclude={"output_dir"}):
            differing = sorted(k for k in stored if stored[k] != self.config.model_dump(mode="json").get(k))
            raise ConfigError(
                f"{self.store.root} holds a run with a different config (fields {', '.join(differing)}); "
                "resume it with its own config (`seqedit run --resume DIR`) or choose another output_dir"
            )

    def _restore(self, lm: LoadedModel, editor: Editor, measurements: Measurements, completed: int) -> None:
        self.log(f"Resuming {self.store.root} after step {completed}: replaying {completed} weight updates")
        for step in range(1, completed + 1):
            self.store.load_ledger(step).replay(lm.model)
        editor_state, _ = self.store.load_state("editor", completed)
        editor.load_state_dict(editor_state)
        monitor_state, monitor_meta = self.store.load_state("monitor", completed)
        measurements.load_state_dict(monitor_state, monitor_meta)

    def _save_states(self, editor: Editor, measurements: Measurements, step: int) -> None:
        self.store.save_state("editor", step, editor.state_dict())
        tensors, meta = measurements.state_dict()
        self.store.save_state("monitor", step, tensors, meta)

    # ------------------------------------------------------------------ the loop
    def _loop(
        self,
        lm: LoadedModel,
        editor: Editor,
        measurements: Measurements,
        batches: list[list[EditRequest]],
        planned: list[EditRequest],
        completed: int,
        max_steps: int | None,
    ) -> RunOutcome:
        checkpoint_counts = set(self.config.checkpoints.edit_counts(len(planned), self.config.batch_size))
        n_edits = sum(len(b) for b in batches[:completed])
        last = len(batches) if max_steps is None else min(len(batches), completed + max_steps)
        with StepProgress(len(planned), n_edits, enabled=self.show_progress, label=self.config.label) as bar:
            for step in range(completed + 1, last + 1):
                batch = batches[step - 1]
                seed_everything(_step_seed(self.config, step))
                started = time.perf_counter()
                try:
                    result = editor.apply(lm, batch)
                    if not _finite(lm.model, result.changed_parameters):
                        result.undo(lm.model)
                        raise EditError("the edited weights contain NaN or Inf (the update was undone)")
                except EditError as exc:
                    return self._fail(step, n_edits, batch, exc)
                elapsed = time.perf_counter() - started
                n_edits += len(batch)
                self._record_step(step, n_edits, batch, result, elapsed, measurements)
                if n_edits in checkpoint_counts:
                    seed_everything(_step_seed(self.config, step) + 500_009)
                    bar.note(f"checkpoint at {n_edits} edits")
                    rows = measurements.checkpoint(step, n_edits, batch, planned[:n_edits])
                    self.store.append("checkpoints", rows)
                self._save_states(editor, measurements, step)
                self.store.write_progress(kind="edit", status="running", completed_steps=step, n_edits=n_edits,
                                          message=f"completed step {step} of {len(batches)}")
                self.store.prune_states(step)
                bar.advance(len(batch))
        if last < len(batches):
            return RunOutcome(self.store.root, "running", last, n_edits, "stopped early (max_steps)")
        return self._finish(last, n_edits)

    def _record_step(
        self,
        step: int,
        n_edits: int,
        batch: Sequence[EditRequest],
        result: EditResult,
        elapsed: float,
        measurements: Measurements,
    ) -> None:
        if self.config.save_ledger:
            self.store.save_ledger(step, result)
        self.store.append("norms", measurements.after_step(step, n_edits, result))
        timing: dict[str, Any] = {"step": step, "n_edits": n_edits, "edits_in_step": len(batch), "total_s": elapsed}
        timing.update({f"phase_{name}_s": seconds for name, seconds in result.timings.items()})
        self.store.append("timings", [timing])
        stats = result.request_stats or [{"case_id": r.case_id} for r in batch]
        self.store.append("requests", [{"step": step, **row} for row in stats])

    def _fail(self, step: int, n_edits: int, batch: Sequence[EditRequest], exc: Exception) -> RunOutcome:
        ids = ", ".join(r.case_id for r in batch[:10]) + (" ..." if len(batch) > 10 else "")
        message = (
            f"step {step} (edits {n_edits + 1}-{n_edits + len(batch)}; case ids {ids}) failed: {exc}. "
            f"Results up to step {step - 1} are kept; the model state after step {step - 1} can be rebuilt "
            "from the base model and the ledger."
        )
        self.store.write_progress(kind="edit", status="failed", completed_steps=step - 1, n_edits=n_edits,
                                  message=message)
        self.store.write_parquet_mirrors()
        self.log(message)
        return RunOutcome(self.store.root, "failed", step - 1, n_edits, message)

    def _finish(self, steps: int, n_edits: int) -> RunOutcome:
        summary = summarise(self.store, self.config)
        self.store.write_summary(summary)
        self.store.write_parquet_mirrors()
        self.store.write_progress(kind="edit", status="finished", completed_steps=steps, n_edits=n_edits,
                                  message="finished")
        return RunOutcome(self.store.root, "finished", steps, n_edits, "finished", summary)


def run_experiment(
    config: RunConfig,
    *,
    resume: bool = False,
    lm: LoadedModel | None = None,
    show_progress: bool = True,
    max_steps: int | None = None,
) -> RunOutcome:
    """Run a sequential editing experiment described by ``config`` (see :class:`RunConfig`)."""
    run = SequentialRun(config, lm=lm, show_progress=show_progress)
    with tracked(run.store, config):
        return run.execute(resume=resume, max_steps=max_steps)


def resume_experiment(run_dir: str | Path, *, lm: LoadedModel | None = None, show_progress: bool = True) -> RunOutcome:
    """Continue a run from its last completed step, with the config it was started with."""
    store = RunStore(run_dir)
    store.read_progress()  # clear error if this is not a run directory
    config = load_config(store.config_path)
    config = config.model_copy(update={"output_dir": Path(run_dir)})
    return run_experiment(config, resume=True, lm=lm, show_progress=show_progress)
