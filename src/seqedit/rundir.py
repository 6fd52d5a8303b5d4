"""The run-directory schema: every file name, table column and header field a run directory holds, and its
version. Writers (``runner``, ``intervene``) and readers (``report``, ``runner.study``'s collection,
``scripts/build_findings.py``) spell them from here, so a change of the format is made in one place and
gets a new :data:`SCHEMA_VERSION` (docs/design.md, "Run directory").

The version is recorded in ``progress.json`` (field :data:`VERSION_FIELD`), the first file a run writes and
the one every reader opens first. Versions:

* **1**: directories written before the schema was versioned (no version field; older ones also lack
  ``editor.json`` and ``health.json``). Same files and columns as version 2: :func:`migrate_progress`
  only fills in the field.
* **2**: ``progress.json`` carries ``schema_version``.

This module sits below ``runner``, ``intervene`` and ``report`` and imports nothing of seqedit but
:mod:`seqedit.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from seqedit.errors import UserError

SCHEMA_VERSION = 2
# Versions this seqedit reads: the current one and every older one with a migration below.
READABLE_VERSIONS = (1, 2)
VERSION_FIELD = "schema_version"  # in progress.json
UNVERSIONED = 1  # a progress.json without VERSION_FIELD

# ---------------------------------------------------------------------------------------------- files
CONFIG = "config.yaml"  # the run config as resolved (runner: RunConfig; intervene: InterventionConfig)
PROGRESS = "progress.json"  # kind, status, completed steps, edits, schema version: rewritten atomically
ENVIRONMENT = "environment.json"  # versions, host, threads, device and dtype (synthetic runs: "synthetic")
SUMMARY = "summary.json"  # headline numbers, written at the end (and by `seqedit study --collect`)
EDITOR = "editor.json"  # edit runs: the config and the editor's resolved settings (resume compares them)
HEALTH = "health.json"  # edit runs: divergence and collapse checks
LOCK = "run.lock"  # held by the process working in the directory
LEDGER_DIR = "ledger"  # step_NNNNNN.safetensors: each step's weight update (save_ledger: true)
STATE_DIR = "state"  # <name>_step_NNNNNN.{json,safetensors}: editor and monitor state (manifest + blobs)
SNAPSHOT_DIR = "snapshots"  # weights_step_NNNNNN.safetensors: the edited weights every SNAPSHOT_EVERY steps
REPORT_DIR = "report"  # `seqedit report` output (default place)

# ---------------------------------------------------------------------------------------------- tables
# Each table is a JSONL file (one row per line, appended as the run goes) with a Parquet mirror.
NORMS = "norms"  # one row per step and tracked matrix
CHECKPOINTS = "checkpoints"  # one row per checkpoint step and measured value
TIMINGS = "timings"  # one row per step
REQUESTS = "requests"  # edit runs: one row per step and edit request (editor statistics)
SPECTRA = "spectra"  # edit runs: singular spectra at checkpoints, rebuilt from the ledger (runner.spectra)
RESULT_TABLES = (NORMS, TIMINGS, REQUESTS, CHECKPOINTS)  # written by the run loop, truncated on resume
TABLE_SUFFIXES = (".jsonl", ".parquet")


def jsonl(table: str) -> str:
    return f"{table}.jsonl"


def parquet(table: str) -> str:
    return f"{table}.parquet"


# Files and folders a run writes (a fresh run into a dead run's directory removes only these).
RUN_FILES = (CONFIG, ENVIRONMENT, PROGRESS, SUMMARY, EDITOR, HEALTH, LEDGER_DIR, STATE_DIR, SNAPSHOT_DIR,
             REPORT_DIR, jsonl(SPECTRA), *(f"{t}{s}" for t in RESULT_TABLES for s in TABLE_SUFFIXES))
# What `seqedit study --collect` copies (tables as Parquet, and the summary it writes; never ledger, state or
# snapshots).
COMPACT_FILES = (CONFIG, ENVIRONMENT, PROGRESS, EDITOR)
COMPACT_TABLES = (NORMS, CHECKPOINTS, REQUESTS, TIMINGS)
OPTIONAL_COMPACT_TABLES = (SPECTRA,)


def ledger_name(step: int) -> str:
    return f"step_{step:06d}.safetensors"


def state_blob_name(name: str, step: int) -> str:
    return f"{name}_step_{step:06d}.safetensors"


def state_manifest_name(name: str, step: int) -> str:
    return f"{name}_step_{step:06d}.json"


def snapshot_name(step: int) -> str:
    return f"weights_step_{step:06d}.safetensors"


# ---------------------------------------------------------------------------------------------- columns
# Every row of a table carries the required columns; the optional ones may be absent (readers add them empty).
STEP = "step"
N_EDITS = "n_edits"
NORM_REQUIRED = (STEP, N_EDITS, "matrix", "fro")
NORM_OPTIONAL = ("layer", "kind", "edited", "fro0", "fro_rel", "dist_from_init", "step_delta_fro", "spectral")
CHECKPOINT_REQUIRED = (STEP, N_EDITS, "group", "name", "value")
CHECKPOINT_OPTIONAL = ("scope", "layer", "definition")
TIMING_REQUIRED = (STEP, "total_s")
TIMING_OPTIONAL = (N_EDITS, "edits_in_step")  # and phase_<name>_s per phase
REQUEST_REQUIRED = (STEP, "case_id")
SPECTRA_REQUIRED = (STEP, N_EDITS, "matrix", "singular_values")
PHASE_PREFIX, PHASE_SUFFIX = "phase_", "_s"


def phase_column(phase: str) -> str:
    return f"{PHASE_PREFIX}{phase}{PHASE_SUFFIX}"


# ---------------------------------------------------------------------------------------------- progress.json
KIND_EDIT, KIND_INTERVENTION = "edit", "intervention"
RUN_KINDS = (KIND_EDIT, KIND_INTERVENTION)
PROGRESS_FIELDS = ("kind", "status", "completed_steps", "n_edits", "message")  # + baseline_complete (edit runs)

# ---------------------------------------------------------------------------------------------- config.yaml
# Where the report's header fields live in config.yaml, per run kind (dotted paths; None: not recorded).
# Edit runs write seqedit.runner.config.RunConfig, interventions seqedit.intervene.config.InterventionConfig.
HEADER_FIELDS: Mapping[str, Mapping[str, str | None]] = {
    KIND_EDIT: {"name": "name", "model": "model", "method": "method", "dataset": "dataset.name",
                "n_edits": "num_edits", "batch_size": "batch_size"},
    KIND_INTERVENTION: {"name": None, "model": "model", "method": "kind", "dataset": "data",
                        "n_edits": None, "batch_size": "batch_size"},
}


def header_value(config: Mapping[str, Any], kind: str, field: str) -> Any:
    """The header ``field`` of a run of ``kind`` read from its config (a scalar), or None when not recorded."""
    dotted = HEADER_FIELDS[kind][field]
    if dotted is None:
        return None
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, Mapping | list) else node


# ---------------------------------------------------------------------------------------------- versions
class SchemaVersionError(UserError, ValueError):
    """A run directory written by a seqedit whose format this one cannot read (a user error: exit 2)."""

    def __init__(self, run_dir: Path, problem: str) -> None:
        self.run_dir, self.problem = run_dir, problem
        super().__init__(f"{run_dir / PROGRESS}: {problem}")


def schema_version(run_dir: Path, progress: Mapping[str, Any]) -> int:
    """The version of a run directory from its ``progress.json``; raises :class:`SchemaVersionError` for one
    this seqedit cannot read."""
    version = progress.get(VERSION_FIELD, UNVERSIONED)
    if isinstance(version, bool) or not isinstance(version, int) or version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise SchemaVersionError(
            run_dir, f"run directory schema version {version!r}; this seqedit reads versions {readable} "
            "(written by another seqedit: use that one, or a newer one, to read it)"
        )
    return version


def _from_version_1(progress: Mapping[str, Any]) -> dict[str, Any]:
    """Version 1 has the same files, fields and columns; only the version was not recorded."""
    return {**progress, VERSION_FIELD: 2}


# version -> the step to the next version (one per older version, applied in turn)
MIGRATIONS: Mapping[int, Callable[[Mapping[str, Any]], dict[str, Any]]] = {1: _from_version_1}


def migrate_progress(run_dir: Path, progress: Mapping[str, Any]) -> dict[str, Any]:
    """``progress.json`` of any readable version, as the current version writes it."""
    version = schema_version(run_dir, progress)
    migrated = dict(progress)
    while version < SCHEMA_VERSION:
        migrated = MIGRATIONS[version](migrated)
        version = int(migrated[VERSION_FIELD])
    return migrated
