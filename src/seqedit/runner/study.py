"""Studies: a named set of ordinary runs that share facts, probes and statistics.

A study file holds ``defaults`` (fields of a run config shared by every editing run), ``runs`` (per run,
the fields that differ; an entry with an ``intervention:`` block is a post-training intervention instead
of an editing run) and an ``output_dir``; each run gets ``<output_dir>/<run name>``. ``run_study`` starts
the runs that do not exist, continues the unfinished ones (editing runs and interventions resume exactly), leaves
finished ones alone, and runs up to ``workers`` at once as local processes or as Ray tasks. Every run directory is an ordinary one: ``seqedit report``,
``seqedit compare`` and ``seqedit run --resume`` work on it as on any other.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from seqedit import rundir
from seqedit.intervene.config import InterventionConfig
from seqedit.runner.config import ConfigError, RunConfig
from seqedit.runner.store import RunStore

Backend = Literal["local", "ray"]
RunKind = Literal["edit", "intervention"]


class StudyConfig(BaseModel):
    """A study file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name of the study (labels, report titles).")
    output_dir: Path = Field(Path("runs/study"), description="Directory holding one run directory per run.")
    defaults: dict[str, Any] = Field(default_factory=dict, description="Run-config fields shared by every editing run.")
    runs: dict[str, dict[str, Any]] = Field(description="Run name -> fields that differ from the defaults.")

    @field_validator("runs")
    @classmethod
    def _names_are_directory_names(cls, runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not runs:
            raise ValueError("a study needs at least one run")
        for name in runs:
            if not name or name in {".", ".."} or any(c in name for c in "/\\:") or name.startswith("_"):
                raise ValueError(f"run name {name!r} cannot be a directory name (no '/', '\\', ':', leading '_')")
        return runs


@dataclass(frozen=True)
class StudyRun:
    """One run of a study, with its validated config (a ``RunConfig`` or an ``InterventionConfig``)."""

    name: str
    kind: RunKind
    config: RunConfig | InterventionConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dictionaries are merged key by key; everything else in ``override`` replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _fields(exc: ValidationError) -> str:
    """A validation error on one line: ``field.path: message; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def load_study(path: str | Path, output_dir: str | Path | None = None) -> StudyConfig:
    """Read and validate a study file; ``output_dir`` replaces the file's."""
    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: no such study file") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not a valid YAML file ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study file is a mapping with name, output_dir, defaults and runs")
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        where = _fields(exc)
        raise ConfigError(f"{source}: {where}") from exc


def study_runs(study: StudyConfig, only: Sequence[str] | None = None) -> list[StudyRun]:
    """The study's runs with validated configs, in file order (``only``: just these names)."""
    unknown = sorted(set(only or []) - set(study.runs))
    if unknown:
        raise ConfigError(f"study {study.name!r} has no run named {', '.join(unknown)}; it has {', '.join(study.runs)}")
    runs: list[StudyRun] = []
    for name, fields in study.runs.items():
        if only and name not in only:
            continue
        run_dir = str(study.output_dir / name)
        try:
            if "intervention" in fields:
                extra = sorted(set(fields) - {"intervention"})
                if extra:
                    raise ConfigError(f"run {name!r}: an intervention entry holds only 'intervention:' ({extra})")
                data = {**fields["intervention"], "output_dir": run_dir}
                runs.append(StudyRun(name, "intervention", InterventionConfig.model_validate(data)))
            else:
                data = _merge(study.defaults, fields)
                data.setdefault("name", name)
                data["output_dir"] = run_dir
                runs.append(StudyRun(name, "edit", RunConfig.model_validate(data)))
        except ValidationError as exc:
            where = _fields(exc)
            raise ConfigError(f"study {study.name!r}, run {name!r}: {where}") from exc
    return runs


def run_state(run: StudyRun) -> str:
    """``new`` (no directory), ``finished``, ``failed``, ``running`` (a process works in the directory now)
    or ``stopped`` (unfinished and nobody working on it: its process was killed or ended; re-run to continue)."""
    store = RunStore(run.run_dir)
    if not store.exists():
        return "new"
    status = str(store.read_progress().get("status", "unknown"))
    if status == "running" and store.holder() is None:
        return "stopped"
    return status


def run_progress(run: StudyRun) -> str:
    """How far a run has got against its plan, e.g. ``410 of 1000 edits`` or ``40 of 500 steps``."""
    store = RunStore(run.run_dir)
    progress = store.read_progress() if store.exists() else {}
    if isinstance(run.config, RunConfig):
        return f"{int(progress.get('n_edits', 0))} of {run.config.num_edits} edits"
    return f"{int(progress.get('completed_steps', 0))} of {run.config.steps} steps"


# ---------------------------------------------------------------------------------------------- workers
def _execute(kind: RunKind, config_data: dict[str, Any], threads: int | None, log_path: str | None) -> dict[str, Any]:
    """Run or continue one run (in a worker process or a Ray task); returns its outcome."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        if log_path:
            log = stack.enter_context(open(log_path, "a", encoding="utf-8"))
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        if kind == "intervention":
            return _execute_intervention(InterventionConfig.model_validate(config_data))
        from seqedit.runner.run import run_experiment

        config = RunConfig.model_validate(config_data)
        outcome = run_experiment(config, resume=RunStore(config.output_dir).exists(), show_progress=False)
        return {"run_dir": str(outcome.run_dir), "status": outcome.status, "n_edits": outcome.n_edits,
                "message": outcome.message}


def _execute_intervention(config: InterventionConfig) -> dict[str, Any]:
    from seqedit.intervene.run import run_intervention

    resume = RunStore(config.output_dir).exists()  # unfinished: continued from its newest saved state
    summary = run_intervention(config, progress=False, resume=resume)
    return {"run_dir": str(config.output_dir), "status": "finished", "n_edits": 0,
            "message": f"{summary['steps']} steps"}


def run_study(
    runs: Sequence[StudyRun],
    *,
    workers: int = 1,
    backend: Backend = "local",
    threads: int | None = None,
    log_dir: Path | None = None,
    ray_address: str | None = None,
    on_done: Callable[[StudyRun, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every unfinished run (``workers`` at once); returns run name -> outcome. A run that raises is
    reported as failed with its message; the others go on. A run another process is working on is left to
    it (outcome ``running``), not reported as failed."""
    states = {r.name: run_state(r) for r in runs}
    pending = [r for r in runs if states[r.name] not in ("finished", "running")]
    outcomes: dict[str, dict[str, Any]] = {
        r.name: {"run_dir": str(r.run_dir), "status": "finished", "message": "already finished"}
        for r in runs if states[r.name] == "finished"
    }
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)

    def args(run: StudyRun) -> tuple[RunKind, dict[str, Any], int | None, str | None]:
        log = str(log_dir / f"{run.name}.log") if log_dir is not None else None
        return run.kind, run.config.model_dump(mode="json"), threads, log

    def done(run: StudyRun, outcome: dict[str, Any]) -> None:
        outcomes[run.name] = outcome
        if on_done is not None:
            on_done(run, outcome)

    for run in runs:
        if states[run.name] == "running":
            holder = RunStore(run.run_dir).holder() or "another process"
            done(run, {"run_dir": str(run.run_dir), "status": "running", "message": f"in use by {holder}; left to it"})
    if not pending:
        return outcomes
    if backend == "ray":
        for run, outcome in zip(pending, _run_on_ray([args(r) for r in pending], ray_address), strict=True):
            done(run, outcome)
        return outcomes
    if backend != "local":
        raise ConfigError(f"unknown backend {backend!r}; choose 'local' or 'ray'")
    if workers <= 1:
        for run in pending:
            done(run, _guarded(*args(run)))
        return outcomes
    # spawn: a fresh interpreter per worker (no forked torch thread pools, no inherited model memory).
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_guarded, *args(run)): run for run in pending}
        for future in as_completed(futures):
            done(futures[future], future.result())
    return outcomes


def _guarded(kind: RunKind, config_data: dict[str, Any], threads: int | None, log_path: str | None) -> dict[str, Any]:
    try:
        return _execute(kind, config_data, threads, log_path)
    except Exception as exc:  # one run's failure must not stop the study
        return {"run_dir": str(config_data.get("output_dir")), "status": "failed",
                "message": f"{type(exc).__name__}: {exc}"}


def _run_on_ray(payloads: list[tuple[RunKind, dict[str, Any], int | None, str | None]],
                ray_address: str | None) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("the ray backend needs Ray: pip install 'seqedit[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=ray_address or os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(_guarded)
    return list(ray.get([remote.remote(*p) for p in payloads]))


# ---------------------------------------------------------------------------------------------- results
COMPACT_FILES = rundir.COMPACT_FILES
COMPACT_TABLES = rundir.COMPACT_TABLES
OPTIONAL_TABLES = rundir.OPTIONAL_COMPACT_TABLES  # rebuilt from the ledger after the run (runner.spectra)


def refresh_spectra(run: StudyRun) -> Path | None:
    """Rebuild ``spectra.jsonl`` of an editing run that kept its ledger, when it is missing or older than the
    run's progress; returns it (None for interventions and runs without a completed step or ledger)."""
    from seqedit.runner.spectra import SPECTRA_TABLE, run_spectra

    store = RunStore(run.run_dir)
    if run.kind != "edit" or not store.exists() or not store.ledger_dir.is_dir():
        return None
    if int(store.read_progress().get("completed_steps", 0)) == 0:
        return None
    table = store.root / rundir.jsonl(SPECTRA_TABLE)
    if table.exists() and table.stat().st_mtime >= store.progress_path.stat().st_mtime:
        return table
    return run_spectra(run.run_dir)


def collect_results(run: StudyRun, destination: Path) -> Path | None:
    """Copy a run's compact results (config, resolved editor settings, summary, tables as Parquet; never
    ledgers or editor state) into ``destination/<run name>``; a run still in progress is collected up to
    its last completed step. Returns the folder, or None when the run has not started."""
    import pandas as pd

    store = RunStore(run.run_dir)
    if not store.exists():
        return None
    progress = store.read_progress()  # first: refuses a schema version this seqedit cannot read
    target = destination / run.name
    target.mkdir(parents=True, exist_ok=True)
    for name in COMPACT_FILES:
        if (run.run_dir / name).exists():
            shutil.copy2(run.run_dir / name, target / name)
    completed = int(progress.get("completed_steps", 0))
    for table in COMPACT_TABLES:
        rows = [r for r in store.read(table) if int(r.get(rundir.STEP, 0)) <= completed]
        frame = pd.DataFrame(rows)
        for column in frame.columns:  # mixed None/str/number columns: Parquet needs one type per column
            if frame[column].dtype == object:
                frame[column] = frame[column].map(lambda v: None if v is None else (v if isinstance(v, str) else json_text(v)))
        frame.to_parquet(target / rundir.parquet(table), index=False)
    for table in OPTIONAL_TABLES:
        rows = [r for r in store.read(table) if int(r.get(rundir.STEP, 0)) <= completed] if store.table_path(table).exists() else []
        if rows:
            pd.DataFrame(rows).to_parquet(target / rundir.parquet(table), index=False)
    summary = _collected_summary(run, store, progress)
    (target / rundir.SUMMARY).write_text(json_text(summary, indent=2) + "\n", encoding="utf-8")
    return target


def _collected_summary(run: StudyRun, store: RunStore, progress: Mapping[str, Any]) -> dict[str, Any]:
    from seqedit.runner.summary import summarise

    if run.kind == "edit":
        assert isinstance(run.config, RunConfig)
        summary = summarise(store, run.config)
        summary["n_steps"] = summary.get("steps")
    else:
        existing = run.run_dir / rundir.SUMMARY
        import json

        summary = json.loads(existing.read_text(encoding="utf-8")) if existing.exists() else {}
        summary.setdefault("kind", getattr(run.config, "kind", None))
        summary["method"] = f"intervention:{getattr(run.config, 'kind', '')}"
        summary["n_steps"] = int(progress.get("completed_steps", 0))
        summary["n_edits"] = 0
    summary["run"] = run.name
    summary["status"] = progress.get("status")
    summary["completed_steps"] = progress.get("completed_steps")
    return summary


def json_text(value: Any, indent: int | None = None) -> str:
    """Strict JSON (non-finite numbers as null)."""
    from seqedit.utils.io import strict_json

    return strict_json(value, indent)
