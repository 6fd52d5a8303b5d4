"""Read a run directory (the format in :mod:`seqedit.rundir`, docs/design.md "Run directory") into pandas
DataFrames.

The directory's schema version is read from ``progress.json``: older versions are migrated
(:func:`seqedit.rundir.migrate_progress`), newer ones refused with one line naming both versions. Tables are read from their Parquet mirror when it is at least as new as the JSONL file (a run that is still
going may not have refreshed the mirror yet) and from JSONL otherwise. Optional files may be absent; a
required file that is missing or malformed raises :class:`RunDirectoryError` naming the directory and file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from seqedit import rundir
from seqedit.errors import UserError

RunKind = Literal["edit", "intervention"]

NORM_REQUIRED, NORM_OPTIONAL = rundir.NORM_REQUIRED, rundir.NORM_OPTIONAL
CHECKPOINT_REQUIRED, CHECKPOINT_OPTIONAL = rundir.CHECKPOINT_REQUIRED, rundir.CHECKPOINT_OPTIONAL
TIMING_REQUIRED, TIMING_OPTIONAL = rundir.TIMING_REQUIRED, rundir.TIMING_OPTIONAL
REQUEST_REQUIRED = rundir.REQUEST_REQUIRED


class RunDirectoryError(UserError, ValueError):
    """A run directory is missing a required file or holds a malformed one."""

    def __init__(self, run_dir: Path, file: str, problem: str) -> None:
        self.run_dir = run_dir
        self.file = file
        self.problem = problem
        super().__init__(f"run directory {run_dir}: {file}: {problem}")


@dataclass(frozen=True)
class Progress:
    kind: RunKind
    status: str
    completed_steps: int
    n_edits: int
    message: str
    # The schema version the directory was written in (before migration; seqedit.rundir).
    schema_version: int = rundir.SCHEMA_VERSION


@dataclass(frozen=True)
class RunMeta:
    """The header of a report: what was run, in a few words."""

    name: str
    model: str | None
    method: str | None
    dataset: str | None
    n_edits: int | None
    batch_size: int | None

    @property
    def label(self) -> str:
        """Short label for legends: the method, or the run name when the method is unknown."""
        return self.method or self.name


@dataclass
class RunData:
    """Everything in one run directory, as read from disk."""

    path: Path
    config: dict[str, Any]
    progress: Progress
    meta: RunMeta
    norms: pd.DataFrame
    checkpoints: pd.DataFrame
    timings: pd.DataFrame
    requests: pd.DataFrame
    environment: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    # table name -> file it was read from; tables whose file is absent are listed in ``missing``.
    sources: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def kind(self) -> RunKind:
        return self.progress.kind

    @property
    def x_column(self) -> str:
        """The x axis of this run: number of edits for edit runs, training step for interventions."""
        return "n_edits" if self.kind == "edit" else "step"

    @property
    def x_label(self) -> str:
        return "number of edits" if self.kind == "edit" else "training step"

    @property
    def is_synthetic(self) -> bool:
        return bool((self.environment or {}).get("synthetic"))

    def group(self, group: str) -> pd.DataFrame:
        """Checkpoint rows of one group (``edit``, ``downstream``, ``activation``, ``profile``, ``train``)."""
        return self.checkpoints[self.checkpoints["group"] == group]


def load_run(run_dir: str | Path) -> RunData:
    """Read ``run_dir``; raise :class:`RunDirectoryError` for a missing or malformed required file."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirectoryError(path, ".", "not a directory")
    sources: dict[str, Path] = {}
    missing: list[str] = []

    progress = _read_progress(path)  # first: it says which version the rest is written in
    config = _read_yaml(path, rundir.CONFIG)
    norms = _read_table(path, rundir.NORMS, NORM_REQUIRED, NORM_OPTIONAL, sources, missing, required=True)
    checkpoints = _read_table(
        path, rundir.CHECKPOINTS, CHECKPOINT_REQUIRED, CHECKPOINT_OPTIONAL, sources, missing, required=False
    )
    timings = _read_table(path, rundir.TIMINGS, TIMING_REQUIRED, TIMING_OPTIONAL, sources, missing, required=False)
    requests = _read_table(path, rundir.REQUESTS, REQUEST_REQUIRED, (), sources, missing, required=False)
    environment = _read_optional_json(path, rundir.ENVIRONMENT, missing)
    summary = _read_optional_json(path, rundir.SUMMARY, missing)

    return RunData(
        path=path,
        config=config,
        progress=progress,
        meta=_run_meta(path, config, progress),
        norms=_normalise_norms(norms),
        checkpoints=_normalise_checkpoints(checkpoints),
        timings=_normalise_timings(timings),
        requests=requests,
        environment=environment,
        summary=summary,
        sources=sources,
        missing=missing,
    )


# ----------------------------------------------------------------------------------------------- files


def _read_yaml(run_dir: Path, name: str) -> dict[str, Any]:
    file = run_dir / name
    if not file.is_file():
        raise RunDirectoryError(run_dir, name, "required file is missing")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RunDirectoryError(run_dir, name, f"not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RunDirectoryError(run_dir, name, f"expected a mapping at the top level, found {type(data).__name__}")
    return data


def _read_json(run_dir: Path, name: str) -> dict[str, Any]:
    file = run_dir / name
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(run_dir, name, f"not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise RunDirectoryError(run_dir, name, f"expected a JSON object, found {type(data).__name__}")
    return data


def _read_optional_json(run_dir: Path, name: str, missing: list[str]) -> dict[str, Any] | None:
    if not (run_dir / name).is_file():
        missing.append(name)
        return None
    return _read_json(run_dir, name)


def _read_progress(run_dir: Path) -> Progress:
    name = rundir.PROGRESS
    if not (run_dir / name).is_file():
        raise RunDirectoryError(run_dir, name, "required file is missing")
    written = _read_json(run_dir, name)
    try:
        version = rundir.schema_version(run_dir, written)
    except rundir.SchemaVersionError as exc:
        raise RunDirectoryError(run_dir, name, exc.problem) from exc
    data = rundir.migrate_progress(run_dir, written)
    kind = data.get("kind")
    if kind not in rundir.RUN_KINDS:
        raise RunDirectoryError(run_dir, name, f"'kind' must be 'edit' or 'intervention', got {kind!r}")
    try:
        completed = int(data.get("completed_steps", 0))
        n_edits = int(data.get("n_edits", 0))
    except (TypeError, ValueError) as exc:
        raise RunDirectoryError(run_dir, name, f"'completed_steps' and 'n_edits' must be integers ({exc})") from exc
    return Progress(
        kind=kind,
        status=str(data.get("status", "unknown")),
        completed_steps=completed,
        n_edits=n_edits,
        message=str(data.get("message", "") or ""),
        schema_version=version,
    )


def _table_file(run_dir: Path, stem: str) -> Path | None:
    """The file to read a table from: the Parquet mirror unless the JSONL file is newer."""
    parquet, jsonl = run_dir / rundir.parquet(stem), run_dir / rundir.jsonl(stem)
    if parquet.is_file() and (not jsonl.is_file() or parquet.stat().st_mtime >= jsonl.stat().st_mtime):
        return parquet
    if jsonl.is_file():
        return jsonl
    return None


def _read_table(
    run_dir: Path,
    stem: str,
    required_columns: Sequence[str],
    optional_columns: Sequence[str],
    sources: dict[str, Path],
    missing: list[str],
    *,
    required: bool,
) -> pd.DataFrame:
    file = _table_file(run_dir, stem)
    if file is None:
        if required:
            raise RunDirectoryError(
                run_dir, rundir.jsonl(stem), f"required file is missing (nor is there {rundir.parquet(stem)})"
            )
        missing.append(rundir.jsonl(stem))
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (*required_columns, *optional_columns)})
    sources[stem] = file
    frame = _read_parquet(run_dir, file) if file.suffix == ".parquet" else _read_jsonl(run_dir, file)
    if frame.empty and len(frame.columns) == 0:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in required_columns})
    absent = [c for c in required_columns if c not in frame.columns]
    if absent:
        raise RunDirectoryError(run_dir, file.name, f"missing required column(s) {', '.join(absent)}")
    for column in optional_columns:
        if column not in frame.columns:
            frame[column] = np.nan
    return frame


def _read_parquet(run_dir: Path, file: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(file)
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise RunDirectoryError(run_dir, file.name, f"cannot be read as Parquet ({exc})") from exc


def _read_jsonl(run_dir: Path, file: Path) -> pd.DataFrame:
    rows = []
    for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunDirectoryError(run_dir, file.name, f"line {lineno} is not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise RunDirectoryError(run_dir, file.name, f"line {lineno} is not a JSON object")
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- tables


def _as_int(frame: pd.DataFrame, column: str) -> None:
    frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")


def _as_float(frame: pd.DataFrame, column: str) -> None:
    frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)


def _normalise_norms(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("step", "n_edits", "layer"):
        _as_int(frame, column)
    for column in ("fro", "fro0", "fro_rel", "dist_from_init", "step_delta_fro", "spectral"):
        _as_float(frame, column)
    frame["edited"] = frame["edited"].map(lambda v: bool(v) if pd.notna(v) else False).astype(bool)
    frame["matrix"] = frame["matrix"].astype(str)
    frame["kind"] = frame["kind"].map(lambda v: str(v) if pd.notna(v) else "matrix")
    # Rows written twice (a resumed step) keep the latest version.
    frame = frame.drop_duplicates(subset=["step", "matrix"], keep="last")
    needs_rel = frame["fro_rel"].isna() & frame["fro0"].gt(0)
    frame.loc[needs_rel, "fro_rel"] = frame.loc[needs_rel, "fro"] / frame.loc[needs_rel, "fro0"]
    return frame.sort_values(["step", "layer", "matrix"], na_position="last").reset_index(drop=True)


def _normalise_checkpoints(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("step", "n_edits", "layer"):
        _as_int(frame, column)
    _as_float(frame, "value")
    for column in ("group", "name"):
        frame[column] = frame[column].astype(str)
    for column in ("scope", "definition"):
        frame[column] = frame[column].map(lambda v: str(v) if pd.notna(v) else "")
    keys = ["step", "group", "name", "scope", "layer", "definition"]
    frame = frame.drop_duplicates(subset=keys, keep="last")
    return frame.sort_values(["group", "name", "scope", "layer", "step"], na_position="first").reset_index(
        drop=True
    )


def _normalise_timings(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("step", "n_edits", "edits_in_step"):
        _as_int(frame, column)
    for column in [c for c in frame.columns if c == "total_s" or _is_phase_column(c)]:
        _as_float(frame, column)
    frame = frame.drop_duplicates(subset=["step"], keep="last")
    return frame.sort_values("step").reset_index(drop=True)


def _is_phase_column(column: str) -> bool:
    return column.startswith(rundir.PHASE_PREFIX) and column.endswith(rundir.PHASE_SUFFIX)


def phase_columns(timings: pd.DataFrame) -> list[str]:
    """The ``phase_<name>_s`` columns that hold at least one value, in file order."""
    return [c for c in timings.columns if _is_phase_column(c) and timings[c].notna().any()]


def phase_name(column: str) -> str:
    return column.removeprefix(rundir.PHASE_PREFIX).removesuffix(rundir.PHASE_SUFFIX)


# ----------------------------------------------------------------------------------------------- header


def config_value(config: Mapping[str, Any], kind: RunKind, field_name: str) -> Any:
    """A header field (``name``, ``model``, ``method``, ``dataset``, ``n_edits``, ``batch_size``) of a run of
    ``kind``, read from its documented place in config.yaml (:data:`seqedit.rundir.HEADER_FIELDS`), or None."""
    return rundir.header_value(config, kind, field_name)


def _as_optional_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _run_meta(run_dir: Path, config: Mapping[str, Any], progress: Progress) -> RunMeta:
    def text(field_name: str) -> str | None:
        value = config_value(config, progress.kind, field_name)
        return str(value) if value is not None else None

    n_edits = _as_optional_int(config_value(config, progress.kind, "n_edits"))
    if n_edits is None and progress.kind == rundir.KIND_EDIT:
        n_edits = progress.n_edits
    return RunMeta(
        name=text("name") or run_dir.resolve().name,
        model=text("model"),
        method=text("method"),
        dataset=text("dataset"),
        n_edits=n_edits,
        batch_size=_as_optional_int(config_value(config, progress.kind, "batch_size")),
    )
