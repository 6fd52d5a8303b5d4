"""The sequential editing loop: edit batch after batch, measure, record, and resume after a crash.

Determinism: before every editor call and every checkpoint, all random generators are seeded from
``(config.seed, step)``, and a resumed run rebuilds the model by re-adding the stored weight deltas in
order (bit-identical), so a resumed run ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from seqedit import rundir
from seqedit.data.records import EditRequest
from seqedit.editors.base import EditError, Editor, EditResult, profile_choice
from seqedit.editors.compact import tensor_digest
from seqedit.editors.profiles import UnknownProfileError, choose_profile
from seqedit.editors.registry import create_editor, make_config
from seqedit.models.loading import LoadedModel, load
from seqedit.runner.config import ConfigError, RunConfig, config_to_yaml, load_config
from seqedit.runner.drift import check_config_on_resume, check_editor_on_resume, record_editor
from seqedit.runner.health import HealthEvent, HealthMonitor
from seqedit.runner.measure import Measurements
from seqedit.runner.progress import StepProgress
from seqedit.runner.requests import select_requests
from seqedit.runner.store import SNAPSHOT_EVERY, RunDirectoryError, RunStore, environment_info
from seqedit.runner.summary import summarise
from seqedit.runner.trackers import tracked
from seqedit.runner.validate import validate_output_dir, validate_with_model
from seqedit.utils.io import write_json_atomic
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
    """Reject what can be rejected without loading anything (profile, method, hyper-parameters)."""
    try:
        choose_profile(config.profile, None)
    except UnknownProfileError as exc:
        raise ConfigError(f"field 'profile': {exc}") from exc
    try:
        make_config(config.method, None, config.hparams, config.profile)
    except ValidationError as exc:
        fields = "; ".join(
            f"field '{'.'.join(['hparams', *map(str, e['loc'])])}': {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"method '{config.method}': {fields}") from exc
    except ValueError as exc:  # unknown method
        raise ConfigError(f"field 'method': {exc}") from exc


@contextlib.contextmanager
def _no_loading_bars() -> Iterator[None]:
    """Silence the weight-loading progress bars of transformers and the Hugging Face hub (quiet runs)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    hub_was_off = are_progress_bars_disabled()
    transformers_was_on = hf_logging.is_progress_bar_enabled()
    disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not hub_was_off:
            enable_progress_bars()
        if transformers_was_on:
            hf_logging.enable_progress_bar()


ACTIVATION_BASELINE = "activations.baseline/"
CUMULATIVE_DELTA = "norms.cumulative/"


def _measured_again(key: str) -> bool:
    """Monitor state a resume measures again instead of reading (see ``_measure_unstored_state``)."""
    return key.startswith(ACTIVATION_BASELINE)


def _measured_again_or_in_ledger(key: str) -> bool:
    """With a ledger, also the cumulative deltas ``Σ Δ``: the ledger holds every step's delta, so a resume
    sums them again (``_rebuild_cumulative``) instead of reading 8 bytes per edited weight."""
    return _measured_again(key) or key.startswith(CUMULATIVE_DELTA)


# A prime larger than any run's step count: the streams of (seed, step) and (seed', step') never coincide.
STEP_SEED_STRIDE = 1_000_003


def _step_seed(config: RunConfig, step: int) -> int:
    return config.seed * STEP_SEED_STRIDE + step


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
        self._facts: dict[str, Any] = {}
        self._profile: dict[str, Any] = {}
        self._touched: set[str] = set()  # parameters changed by some step so far (what a snapshot holds)

    # ------------------------------------------------------------------ setup
    def _load_model(self) -> LoadedModel:
        if self._lm is None:
            with contextlib.nullcontext() if self.show_progress else _no_loading_bars():
                self._lm = load(self.config.model, dtype=self.config.dtype, device=self.config.device)
        return self._lm

    def _batches(self, requests: Sequence[EditRequest]) -> list[list[EditRequest]]:
        size = self.config.batch_size
        return [list(requests[i : i + size]) for i in range(0, len(requests), size)]

    # ------------------------------------------------------------------ main entry
    def execute(self, *, resume: bool = False, max_steps: int | None = None) -> RunOutcome:
        """Run (or resume) to the end, or for at most ``max_steps`` more steps."""
        validate_before_work(self.config)
        validate_output_dir(self.config)
        selection = select_requests(self.config)
        if resume:
            self.store.read_progress()  # not a run directory: refused before anything is written
            self._check_same_config()  # a changed experiment: refused before the lock file is touched
        else:
            self.store.check_new_run(remove_dead=False)  # refused before the directory is touched
        with self.store.locked():
            return self._execute_locked(selection, resume, max_steps)

    def _execute_locked(self, selection: Any, resume: bool, max_steps: int | None) -> RunOutcome:
        planned = selection.edits
        self._facts = selection.describe()
        completed = 0
        baseline_done = False
        if resume:
            progress = self.store.read_progress()
            completed = int(progress["completed_steps"])
            self._check_same_config()
            if progress["status"] == "finished":
                self.log(f"{self.store.root}: already finished")
                return RunOutcome(self.store.root, "finished", completed, int(progress["n_edits"]))
            # Runs written before the flag existed: a completed step implies a recorded baseline.
            baseline_done = bool(progress.get("baseline_complete", completed > 0))
            removed = self.store.remove_temporary_files()
            if removed:
                self.log(f"removed {len(removed)} temporary file(s) left by an interrupted write")
            self.store.truncate_after(completed if baseline_done else -1)
        else:
            self.store.check_new_run(remove_dead=True)
        lm = self._load_model()
        choice = profile_choice(lm, self.config.profile)
        self._profile = choice.describe()
        editor = create_editor(self.config.method, lm, self.config.hparams, self.config.profile)
        editor.show_progress = self.show_progress
        validate_with_model(self.config, lm, editor, [*planned, *selection.probes])
        # after validation, so that bad input stays one line
        self.log(choice.notice or f"settings profile: {choice.name} ({choice.reason})")
        self.log(selection.log_line(self.config.dataset.name))
        self.store.baseline_complete = baseline_done
        if not resume:
            self.store.create(config_to_yaml(self.config), environment_info(lm))
            record_editor(self.store.root, self.config.method, editor, lm, self.config)
        else:
            check_editor_on_resume(self.store.root, self.config.method, editor, self.log, lm)
        try:
            measurements = Measurements(lm, self.config, planned, selection.probes)
            batches = self._batches(planned)
            if baseline_done:
                self._restore(lm, editor, measurements, completed)
            else:
                seed_everything(_step_seed(self.config, 0))
                self.store.append(rundir.NORMS, measurements.start())
                self.store.append(rundir.CHECKPOINTS, measurements.checkpoint(0, 0, [], []))
                self._save_states(editor, measurements, 0)
                self.store.baseline_complete = True
                self.store.write_progress(kind=rundir.KIND_EDIT, status="running", completed_steps=0, n_edits=0,
                                          message="baseline (step 0) recorded")
            return self._loop(lm, editor, measurements, batches, planned, completed, max_steps)
        except BaseException as exc:
            self._mark_failed(exc)
            raise

    def _mark_failed(self, exc: BaseException) -> None:
        """Record an unexpected error as the run's end ("failed", with the reason); results up to the last
        completed step stay, and the run can be resumed from there (docs/design.md, "Run directory")."""
        try:
            progress = self.store.read_progress()
            completed, n_edits = int(progress["completed_steps"]), int(progress["n_edits"])
            where = f"step {completed + 1}" if self.store.baseline_complete else "the baseline (step 0)"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            message = (f"failed at {where}: {type(exc).__name__}" + (f": {reason}" if reason else "")
                       + f". Results up to step {completed} are kept; `seqedit run --resume {self.store.root}` "
                       "continues from there.")
            self.store.write_progress(kind=rundir.KIND_EDIT, status="failed", completed_steps=completed, n_edits=n_edits,
                                      message=message)
            self.store.write_parquet_mirrors()
        except Exception as inner:  # never hide the original error behind one of recording it
            self.log(f"could not mark {self.store.root} as failed: {inner}")

    def _check_same_config(self) -> None:
        # refuses a changed experiment, with a diff; a run started without a later field keeps its legacy value
        self.config = check_config_on_resume(self.store.config_path, self.config)

    def _restore(self, lm: LoadedModel, editor: Editor, measurements: Measurements, completed: int) -> None:
        monitor_state, monitor_meta = self.store.load_state("monitor", completed)
        monitor_state.update(self._measure_unstored_state(measurements, completed))  # on the unedited model
        unstored_sums = {k: d for k, d in self.store.unstored_state("monitor", completed).items()
                         if k.startswith(CUMULATIVE_DELTA)}
        snapshot = self.store.latest_snapshot(completed)
        first = (snapshot or 0) + 1
        self.log(f"Resuming {self.store.root} after step {completed}: "
                 + (f"weights of step {snapshot}, then " if snapshot else "")
                 + f"replaying {completed - first + 1} weight updates")
        params = dict(lm.model.named_parameters(remove_duplicate=False))
        if snapshot is not None:
            with torch.no_grad():
                for name, value in self.store.load_snapshot(snapshot).items():
                    params[name].copy_(value)
                    self._touched.add(name)
        steps = self._replay_ledger(lm, 1 if unstored_sums else first, first, completed)
        if unstored_sums:
            monitor_state.update(self._rebuild_cumulative(measurements, steps, unstored_sums))
        else:
            for _ in steps:
                pass
        editor_state, _ = self.store.load_state("editor", completed)
        editor.load_state_dict(editor_state)
        measurements.load_state_dict(monitor_state, monitor_meta)

    def _measure_unstored_state(self, measurements: Measurements, completed: int) -> dict[str, torch.Tensor]:
        """The activation baselines (a function of the unedited model and the probes, ~100 MB on the embedded
        model) are recorded by checksum only: measure them again on the unedited model and check they are
        the recorded ones bit for bit (else the resumed run could not equal an uninterrupted one)."""
        wanted = {k: d for k, d in self.store.unstored_state("monitor", completed).items()
                  if k.startswith(ACTIVATION_BASELINE)}
        if not wanted:
            return {}
        if measurements.activations is None:
            raise RunDirectoryError(f"{self.store.root}: the monitor state needs activation baselines this run does not measure")
        seed_everything(_step_seed(self.config, 0))
        measurements.activations.baseline()
        fresh = {f"activations.{k}": v for k, v in measurements.activations.state_dict().items()}
        differing = [key for key, digest in wanted.items() if key not in fresh or tensor_digest(fresh[key]) != digest]
        if differing:
            raise RunDirectoryError(
                f"{self.store.root}: the unedited model's activations ({differing[0]}) differ from those recorded "
                "at step 0 (another machine, thread count or library version?); the run cannot resume exactly here"
            )
        return {key: fresh[key] for key in wanted}

    def _replay_ledger(
        self, lm: LoadedModel, start: int, first_replayed: int, last: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Each ledger step's deltas from ``start`` to ``last``, one at a time; those from ``first_replayed``
        on (after the weight snapshot) are also added to the model."""
        for step in range(start, last + 1):
            result = self.store.load_ledger(step)
            if step >= first_replayed:
                result.replay(lm.model)
                self._touched.update(result.deltas)
            yield result.deltas

    def _rebuild_cumulative(
        self, measurements: Measurements, steps: Iterator[dict[str, torch.Tensor]], wanted: dict[str, str]
    ) -> dict[str, torch.Tensor]:
        """The norm monitor's ``Σ Δ`` summed again from every ledger step, checked against its checksums."""
        rebuilt = {f"norms.{k}": v for k, v in measurements.norms.cumulative_from(steps).items()}
        differing = sorted(k for k in set(wanted) | set(rebuilt)
                           if k not in rebuilt or tensor_digest(rebuilt[k]) != wanted.get(k))
        if differing:
            raise RunDirectoryError(
                f"{self.store.root}: the ledger's deltas do not sum to the recorded {differing[0]}; "
                "the run cannot resume exactly"
            )
        return rebuilt

    def _snapshot_if_due(self, lm: LoadedModel, step: int, result: EditResult) -> None:
        """Every ``SNAPSHOT_EVERY`` steps (every step without a ledger) keep the edited weights' values."""
        self._touched.update(result.deltas)
        if step % SNAPSHOT_EVERY == 0 or not self.config.save_ledger:
            params = dict(lm.model.named_parameters(remove_duplicate=False))
            self.store.save_snapshot(step, {name: params[name].detach() for name in sorted(self._touched)})

    def _save_states(self, editor: Editor, measurements: Measurements, step: int) -> None:
        self.store.save_state("editor", step, editor.state_dict())
        tensors, meta = measurements.state_dict()
        unstored = _measured_again_or_in_ledger if self.config.save_ledger else _measured_again
        self.store.save_state("monitor", step, tensors, meta, checksum_only=unstored)

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
        health = HealthMonitor(self.config.health)
        health.replay(self.store.read(rundir.NORMS), self.store.read(rundir.CHECKPOINTS))  # baseline, or the resumed past
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
                norm_rows = self._record_step(step, n_edits, batch, result, elapsed, measurements)
                events = health.observe_norms(step, n_edits, norm_rows)
                if n_edits in checkpoint_counts:
                    seed_everything(_step_seed(self.config, step) + 500_009)
                    bar.note(f"checkpoint at {n_edits} edits")
                    rows = measurements.checkpoint(step, n_edits, batch, planned[:n_edits])
                    self.store.append(rundir.CHECKPOINTS, rows)
                    events += health.observe_checkpoint(step, n_edits, rows)
                self._save_states(editor, measurements, step)
                self._snapshot_if_due(lm, step, result)
                self.store.write_progress(kind=rundir.KIND_EDIT, status="running", completed_steps=step, n_edits=n_edits,
                                          message=f"completed step {step} of {len(batches)}")
                self.store.prune_states(step)
                bar.advance(len(batch))
                stop = self._note_health(health, events)
                if stop is not None:
                    return self._end_on_health(stop, step, n_edits, health)
        if last < len(batches):
            return RunOutcome(self.store.root, "running", last, n_edits, "stopped early (max_steps)")
        return self._finish(last, n_edits, health)

    def _note_health(self, health: HealthMonitor, events: list[HealthEvent]) -> HealthEvent | None:
        """Record divergence and collapse events (health.json) and say whether one ends the run."""
        if not events:
            return None
        for event in events:
            self.log(f"{event.kind} ({event.check}, {event.action}) at step {event.step}: {event.detail}")
        write_json_atomic(self.store.root / rundir.HEALTH, health.report())
        return HealthMonitor.stopping(events)

    def _end_on_health(self, event: HealthEvent, step: int, n_edits: int, health: HealthMonitor) -> RunOutcome:
        """A collapse with stop_on_collapse finishes the run; a divergence set to stop fails it."""
        reason = f"stopped at step {step} ({n_edits} edits): {event.kind} '{event.check}': {event.detail}"
        if event.kind == "collapse":
            return self._finish(step, n_edits, health, message=reason)
        summary = {**summarise(self.store, self.config), **self._health_summary(health)}
        self.store.write_summary(summary)
        self.store.write_parquet_mirrors()
        self.store.write_progress(kind=rundir.KIND_EDIT, status="failed", completed_steps=step, n_edits=n_edits,
                                  message=reason)
        self.log(reason)
        return RunOutcome(self.store.root, "failed", step, n_edits, reason, summary)

    @staticmethod
    def _health_summary(health: HealthMonitor) -> dict[str, Any]:
        report = health.report()
        return {"collapse": report["collapse"], "health": report}

    def _record_step(
        self,
        step: int,
        n_edits: int,
        batch: Sequence[EditRequest],
        result: EditResult,
        elapsed: float,
        measurements: Measurements,
    ) -> list[dict[str, Any]]:
        if self.config.save_ledger:
            self.store.save_ledger(step, result)
        norm_rows = measurements.after_step(step, n_edits, result)
        self.store.append(rundir.NORMS, norm_rows)
        timing: dict[str, Any] = {"step": step, "n_edits": n_edits, "edits_in_step": len(batch), "total_s": elapsed}
        timing.update({f"phase_{name}_s": seconds for name, seconds in result.timings.items()})
        from_cache = result.info.get("statistics", {}).get("from_cache")
        if isinstance(from_cache, dict) and from_cache:
            timing["statistics_from_cache"] = all(bool(v) for v in from_cache.values())
        self.store.append(rundir.TIMINGS, [timing])
        stats = result.request_stats or [{"case_id": r.case_id} for r in batch]
        self.store.append(rundir.REQUESTS, [{"step": step, **row} for row in stats])
        return norm_rows

    def _fail(self, step: int, n_edits: int, batch: Sequence[EditRequest], exc: Exception) -> RunOutcome:
        ids = ", ".join(r.case_id for r in batch[:10]) + (" ..." if len(batch) > 10 else "")
        message = (
            f"step {step} (edits {n_edits + 1}-{n_edits + len(batch)}; case ids {ids}) failed: {exc}. "
            f"Results up to step {step - 1} are kept; the model state after step {step - 1} can be rebuilt "
            "from the base model and the ledger."
        )
        self.store.write_progress(kind=rundir.KIND_EDIT, status="failed", completed_steps=step - 1, n_edits=n_edits,
                                  message=message)
        self.store.write_parquet_mirrors()
        self.log(message)
        return RunOutcome(self.store.root, "failed", step - 1, n_edits, message)

    def _finish(self, steps: int, n_edits: int, health: HealthMonitor, message: str = "finished") -> RunOutcome:
        summary = {**summarise(self.store, self.config, facts=self._facts, profile=self._profile),
                   **self._health_summary(health)}
        write_json_atomic(self.store.root / rundir.HEALTH, health.report())
        self.store.write_summary(summary)
        self.store.write_parquet_mirrors()
        self.store.write_progress(kind=rundir.KIND_EDIT, status="finished", completed_steps=steps, n_edits=n_edits,
                                  message=message)
        return RunOutcome(self.store.root, "finished", steps, n_edits, message, summary)


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


def resume_experiment(
    run_dir: str | Path,
    *,
    lm: LoadedModel | None = None,
    show_progress: bool = True,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
) -> RunOutcome:
    """Continue a run from its last completed step, with the config it was started with. A config file or
    overrides given on resume are checked against it: only changes that are safe on resume are accepted
    (:mod:`seqedit.runner.drift`), anything else is refused with a diff."""
    store = RunStore(run_dir)
    store.read_progress()  # clear error if this is not a run directory
    config = load_config(config_path or store.config_path, overrides)
    config = config.model_copy(update={"output_dir": Path(run_dir)})
    return run_experiment(config, resume=True, lm=lm, show_progress=show_progress)
