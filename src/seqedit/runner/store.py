"""The run directory: every file a run writes, written so that a crash never corrupts what exists.

JSONL results are appended line by line (flushed and fsynced); each row carries its ``step``. On resume,
rows, ledger, state and snapshot files of steps after the last *completed* step (recorded last, atomically,
in ``progress.json``) are dropped, so a run killed mid-step restarts cleanly from the step before; a run
killed before its baseline (step 0) was recorded drops the baseline's rows too and measures it again.

One process at a time: :meth:`RunStore.locked` holds an exclusive ``flock`` on ``run.lock`` (the holder's
pid, host and start time written in it) for as long as a run works in the directory; the kernel releases it
when the process ends, however it ends.

Sizes (docs/design.md, "Run directory"): ledgers hold low-rank deltas as exact factors
(:mod:`seqedit.editors.compact`); editor and monitor state is written as a manifest per step plus blobs of
only the tensors that changed; the edited weights are snapshotted every ``SNAPSHOT_EVERY`` steps so a
resume replays at most that many ledger steps.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from seqedit import rundir
from seqedit.editors.base import EditResult
from seqedit.editors.compact import tensor_digest
from seqedit.models.loading import LoadedModel
from seqedit.runner.config import ConfigError
from seqedit.utils.io import (
    TEMP_SUFFIX,
    dumps_row,
    json_default,
    load_tensors,
    read_jsonl,
    save_tensors_atomic,
    write_json_atomic,
    write_text_atomic,
)

RESULT_TABLES = rundir.RESULT_TABLES
Status = Literal["running", "finished", "failed"]
LOCK_NAME = rundir.LOCK
# Every how many steps the edited weights are snapshotted (a resume replays at most this many ledger steps).
SNAPSHOT_EVERY = 20
RUN_FILES = rundir.RUN_FILES  # a fresh run into a dead run's directory removes only these


def set_threads(threads: int) -> None:
    """``--threads N``: torch's CPU threads (0 leaves torch's default); environment.json records the count."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def environment_info(lm: LoadedModel | None = None) -> dict[str, Any]:
    """What ``environment.json`` records: versions, host, start time, threads, the model's device and dtype."""
    import transformers

    import seqedit

    info: dict[str, Any] = {
        "seqedit": seqedit.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "host": platform.node(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
    }
    if lm is not None:
        info.update({"device": str(lm.device), "dtype": str(lm.dtype), "model_source": lm.source})
    return info


class RunDirectoryError(ConfigError):
    """The run directory is missing, not a run, already holds a run, or is in use (a user error: exit 2)."""


def _step_of(file: Path) -> int:
    """The step of ``<name>_step_NNNNNN.<ext>`` (or ``step_NNNNNN.<ext>``); -1 if the name has none."""
    tail = file.name.split(".", 1)[0].rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


class RunStore:
    """Reads and writes one run directory (format: :mod:`seqedit.rundir`, docs/design.md "Run directory")."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        # Edit runs set this (False at the start, True once step 0 is recorded); written into progress.json.
        self.baseline_complete: bool | None = None
        # Called with (table, rows) after rows are appended (experiment trackers, runner/trackers.py).
        self.observers: list[Callable[[str, list[dict[str, Any]]], None]] = []

    # ------------------------------------------------------------------ paths
    @property
    def config_path(self) -> Path:
        return self.root / rundir.CONFIG

    @property
    def progress_path(self) -> Path:
        return self.root / rundir.PROGRESS

    @property
    def ledger_dir(self) -> Path:
        return self.root / rundir.LEDGER_DIR

    def table_path(self, table: str) -> Path:
        return self.root / rundir.jsonl(table)

    def ledger_path(self, step: int) -> Path:
        return self.ledger_dir / rundir.ledger_name(step)

    @property
    def state_dir(self) -> Path:
        return self.root / rundir.STATE_DIR

    @property
    def snapshot_dir(self) -> Path:
        return self.root / rundir.SNAPSHOT_DIR

    def state_path(self, name: str, step: int) -> Path:
        """The blob of ``name``'s tensors that changed at ``step`` (or, in older runs, all of them)."""
        return self.state_dir / rundir.state_blob_name(name, step)

    def manifest_path(self, name: str, step: int) -> Path:
        return self.state_dir / rundir.state_manifest_name(name, step)

    def snapshot_path(self, step: int) -> Path:
        return self.snapshot_dir / rundir.snapshot_name(step)

    # ------------------------------------------------------------------ lifecycle
    def exists(self) -> bool:
        return self.progress_path.exists()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's exclusive lock (created with the directory if need be) while inside."""
        if self.root.exists() and not self.root.is_dir():
            raise RunDirectoryError(f"{self.root} is a file, not a directory; choose another output_dir")
        created = [p for p in (self.root, *self.root.parents) if not p.exists()]  # deepest first
        self.root.mkdir(parents=True, exist_ok=True)
        handle = (self.root / LOCK_NAME).open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirectoryError(f"{self.root} is in use by {holder}; wait for it to end or stop it") from None
        try:
            handle.seek(0)
            handle.truncate()
            started = datetime.now(UTC).isoformat(timespec="seconds")
            handle.write(f"pid {os.getpid()} on {platform.node()} since {started}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # releases the lock (the file stays: unlinking it would race with a waiting opener)
            self._remove_if_never_a_run(created)

    def holder(self) -> str | None:
        """Who works in the directory now (the lock file's line: pid, host, start), or None when nobody does.

        progress.json says ``running`` from a run's start until it ends, so a killed run still reads
        ``running``; the lock tells the two apart. The probe takes a shared lock for an instant, which an
        exclusive holder refuses; it changes nothing in the file.
        """
        path = self.root / LOCK_NAME
        if not path.is_file():
            return None
        with path.open("r", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "another process"
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    def _remove_if_never_a_run(self, created: list[Path]) -> None:
        """Input refused before the run began leaves nothing behind: drop the lock file and the folders the
        lock created, when no run was written there."""
        if self.exists() or not created or [p.name for p in self.root.iterdir()] != [LOCK_NAME]:
            return
        (self.root / LOCK_NAME).unlink(missing_ok=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()

    def check_new_run(self, *, remove_dead: bool) -> None:
        """Check that a new run may start here; with ``remove_dead`` (only while holding the lock) remove the
        files of a run that died or failed before completing a step, so the new run starts clean.

        Refused: a file; a non-empty directory that is not a run (never written into); a run that completed
        a step or finished (resume it or choose another directory).
        """
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise RunDirectoryError(f"{self.root} is a file, not a directory; choose another output_dir")
        if not self.exists():
            others = sorted(p.name for p in self.root.iterdir() if p.name != LOCK_NAME)
            if others:
                raise RunDirectoryError(
                    f"{self.root} is not empty and is not a seqedit run directory (it holds {others[0]}"
                    f"{' ...' if len(others) > 1 else ''}); choose a new or empty output_dir"
                )
            return
        progress = self.read_progress()
        if progress.get("status") == "finished" or int(progress.get("completed_steps", 0)) > 0:
            resume = f"resume it with `seqedit run --resume {self.root}` or " if progress.get("kind") == "edit" else ""
            raise RunDirectoryError(
                f"{self.root} already holds a run ({progress.get('status')}, {progress.get('completed_steps')} "
                f"steps completed); {resume}choose another output_dir"
            )
        if not remove_dead:
            return
        for name in RUN_FILES:  # a run that died or failed before completing a step: start it again
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def create(self, config_yaml: str, environment: Mapping[str, Any], kind: str = "edit") -> None:
        if self.exists():
            resume = f"resume it with `seqedit run --resume {self.root}` or " if kind == "edit" else ""
            raise RunDirectoryError(f"{self.root} already holds a run; {resume}choose another output_dir")
        if self.root.is_dir() and any(p.name != LOCK_NAME for p in self.root.iterdir()):
            raise RunDirectoryError(
                f"{self.root} is not empty and is not a seqedit run directory; choose a new or empty output_dir"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        # progress.json first: from here on the directory is recognisably a run (a fresh run may replace it
        # as long as it completed no step).
        self.write_progress(kind=kind, status="running", completed_steps=0, n_edits=0, message="started")
        write_text_atomic(self.config_path, config_yaml)
        write_json_atomic(self.root / rundir.ENVIRONMENT, dict(environment))

    def write_progress(
        self,
        *,
        kind: str,
        status: Status,
        completed_steps: int,
        n_edits: int,
        message: str = "",
        baseline_complete: bool | None = None,
    ) -> None:
        """``baseline_complete`` (edit runs): whether step 0 (the unedited model's rows and state) is recorded."""
        progress: dict[str, Any] = {"kind": kind, "status": status, "completed_steps": completed_steps,
                                    "n_edits": n_edits, "message": message,
                                    rundir.VERSION_FIELD: rundir.SCHEMA_VERSION}
        baseline_complete = self.baseline_complete if baseline_complete is None else baseline_complete
        if baseline_complete is not None:
            progress["baseline_complete"] = baseline_complete
        write_json_atomic(self.progress_path, progress)

    def read_progress(self) -> dict[str, Any]:
        if not self.progress_path.exists():
            raise RunDirectoryError(f"{self.root} is not a seqedit run directory (no {rundir.PROGRESS})")
        progress = json.loads(self.progress_path.read_text(encoding="utf-8"))
        return rundir.migrate_progress(self.root, progress)  # refuses a version this seqedit cannot read

    # ------------------------------------------------------------------ tables
    def append(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        written = [dict(r) for r in rows]
        lines = [dumps_row(r) + "\n" for r in written]  # NaN/Inf -> null, flagged in the row
        if not lines:
            return
        path = self.table_path(table)
        with path.open("a", encoding="utf-8") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        for observe in self.observers:
            observe(table, written)

    def read(self, table: str) -> list[dict[str, Any]]:
        return read_jsonl(self.table_path(table))

    def truncate_after(self, completed_steps: int) -> None:
        """Drop everything recorded for steps after ``completed_steps`` (and any torn last line);
        ``-1`` drops the baseline (step 0) too."""
        for table in RESULT_TABLES:
            path = self.table_path(table)
            if not path.exists():
                continue
            kept: list[str] = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if int(row.get("step", 0)) <= completed_steps:
                    kept.append(line + "\n")
            write_text_atomic(path, "".join(kept))
        for folder, pattern in ((self.ledger_dir, "step_*.safetensors"), (self.state_dir, "*_step_*.*"),
                                (self.snapshot_dir, "weights_step_*.safetensors")):
            if folder.exists():
                for file in folder.glob(pattern):
                    if _step_of(file) > completed_steps:
                        file.unlink()

    def remove_temporary_files(self) -> list[Path]:
        """Delete the temporary files of atomic writes that a killed process left behind (hold the lock)."""
        removed = []
        for folder in (self.root, self.ledger_dir, self.state_dir, self.snapshot_dir):
            if folder.is_dir():
                for file in folder.iterdir():
                    if file.name.startswith(".") and file.name.endswith(TEMP_SUFFIX) and file.is_file():
                        file.unlink()
                        removed.append(file)
        return removed

    def write_parquet_mirrors(self) -> None:
        import pandas as pd

        from seqedit.utils.io import atomic_path

        for table in RESULT_TABLES:
            rows = self.read(table)
            if not rows:
                continue
            frame = pd.DataFrame(rows)
            with atomic_path(self.root / rundir.parquet(table)) as tmp:
                frame.to_parquet(tmp, index=False)

    # ------------------------------------------------------------------ tensors
    def save_ledger(self, step: int, result: EditResult) -> None:
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        result.save(self.ledger_path(step))

    def load_ledger(self, step: int) -> EditResult:
        path = self.ledger_path(step)
        if not path.exists():
            raise RunDirectoryError(f"{path} is missing: the run cannot be rebuilt past step {step - 1}")
        return EditResult.load(path)

    def save_state(
        self,
        name: str,
        step: int,
        tensors: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any] | None = None,
        checksum_only: Callable[[str], bool] = lambda key: False,
        *,
        incremental: bool = True,
    ) -> None:
        """State after ``step`` (editor memory, monitor baselines ...), written incrementally: a blob of the
        tensors that changed since the newest manifest of ``name`` (compared by SHA-256), then the step's
        manifest naming the blob and checksum of every tensor. Keyed by step, so that a crash between
        writing it and recording the step as completed never mixes steps. Tensors selected by
        ``checksum_only`` (ones the run can measure again) are recorded by checksum alone: see
        :meth:`unstored_state`. ``incremental=False`` writes every tensor into this step's blob, so that
        pruning older steps frees all their space (for state that changes almost entirely every time)."""
        previous = self._latest_manifest(name, before=step) if incremental else None
        entries: dict[str, list[str | None]] = {}
        changed: dict[str, torch.Tensor] = {}
        blob = self.state_path(name, step).name
        for key, tensor in tensors.items():
            digest = tensor_digest(tensor)
            old = previous.get(key) if previous else None
            if checksum_only(key):
                entries[key] = [None, digest]
            elif old is not None and old[0] is not None and old[1] == digest and (self.state_dir / old[0]).exists():
                entries[key] = old
            else:
                entries[key] = [blob, digest]
                changed[key] = tensor
        if changed:
            save_tensors_atomic(self.state_path(name, step), changed)
        manifest = {"tensors": entries, "meta": json.loads(json.dumps(dict(meta or {}), default=json_default))}
        write_json_atomic(self.manifest_path(name, step), manifest, indent=None)

    def state_steps(self, name: str) -> list[int]:
        """The steps with a saved state ``name`` (a manifest), ascending."""
        if not self.state_dir.exists():
            return []
        return sorted(_step_of(f) for f in self.state_dir.glob(f"{name}_step_*.json"))

    def _latest_manifest(self, name: str, before: int) -> dict[str, list[str | None]] | None:
        steps = [s for s in self.state_steps(name) if s < before]
        if not steps:
            return None
        data = json.loads(self.manifest_path(name, max(steps)).read_text(encoding="utf-8"))
        return {k: list(v) for k, v in data["tensors"].items()}

    def load_state(self, name: str, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from safetensors import safe_open

        manifest_path = self.manifest_path(name, step)
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            blobs: dict[str, dict[str, torch.Tensor]] = {}
            tensors: dict[str, torch.Tensor] = {}
            for key, (blob, digest) in manifest["tensors"].items():
                if blob is None:
                    continue  # measured again by the run (unstored_state)
                if blob not in blobs:
                    if not (self.state_dir / blob).exists():
                        raise RunDirectoryError(f"{self.state_dir / blob} is missing: cannot restore '{name}' after step {step}")
                    blobs[blob] = load_tensors(self.state_dir / blob)
                tensors[key] = blobs[blob][key]
                if tensor_digest(tensors[key]) != digest:
                    raise RunDirectoryError(f"{self.state_dir / blob}: '{key}' does not match its checksum (damaged)")
            return tensors, dict(manifest.get("meta", {}))
        path = self.state_path(name, step)  # runs written before manifests: one file with everything
        if not path.exists():
            raise RunDirectoryError(f"{manifest_path} is missing: cannot restore '{name}' after step {step}")
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("json", "{}"))
        return load_tensors(path), meta

    def unstored_state(self, name: str, step: int) -> dict[str, str]:
        """``{key: sha256}`` of the state tensors recorded by checksum only (the run measures them again)."""
        path = self.manifest_path(name, step)
        if not path.exists():
            return {}
        entries = json.loads(path.read_text(encoding="utf-8"))["tensors"]
        return {key: digest for key, (blob, digest) in entries.items() if blob is None}

    def prune_states(self, keep_step: int) -> None:
        """Remove state of other steps, keeping the blobs ``keep_step``'s manifests refer to, and snapshots
        older than the newest one at or before ``keep_step`` (call after ``keep_step`` is recorded)."""
        if self.state_dir.exists():
            keep: set[str] = set()
            for manifest in self.state_dir.glob(f"*_step_{keep_step:06d}.json"):
                keep.add(manifest.name)
                entries = json.loads(manifest.read_text(encoding="utf-8"))["tensors"].values()
                keep.update(blob for blob, _ in entries if blob is not None)
            for file in self.state_dir.glob("*_step_*.*"):
                legacy = file.suffix == ".safetensors" and not file.with_suffix(".json").exists()
                if file.name not in keep and not (legacy and _step_of(file) == keep_step):
                    file.unlink()
        newest = self.latest_snapshot(keep_step)
        if newest is not None:
            for file in self.snapshot_dir.glob("weights_step_*.safetensors"):
                if _step_of(file) < newest:
                    file.unlink()

    # ------------------------------------------------------------------ weight snapshots
    def save_snapshot(self, step: int, weights: Mapping[str, torch.Tensor]) -> None:
        """The exact values of the edited weights after ``step`` (a resume starts from the newest one)."""
        save_tensors_atomic(self.snapshot_path(step), dict(weights))

    def latest_snapshot(self, at_most: int) -> int | None:
        if not self.snapshot_dir.exists():
            return None
        steps = [_step_of(f) for f in self.snapshot_dir.glob("weights_step_*.safetensors")]
        steps = [s for s in steps if 0 < s <= at_most]
        return max(steps) if steps else None

    def load_snapshot(self, step: int) -> dict[str, torch.Tensor]:
        return load_tensors(self.snapshot_path(step))

    @property
    def summary_path(self) -> Path:
        return self.root / rundir.SUMMARY

    def remove_states(self) -> None:
        """Remove every saved state (a finished run that nothing will resume)."""
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_json_atomic(self.root / rundir.SUMMARY, dict(summary))

