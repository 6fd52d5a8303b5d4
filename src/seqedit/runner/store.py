"""The run directory: every file a run writes, written so that a crash never corrupts what exists.

JSONL results are appended line by line (flushed and fsynced); each row carries its ``step``. On resume,
rows and ledger files of steps after the last *completed* step (recorded last, atomically, in
``progress.json``) are dropped, so a run killed mid-step restarts cleanly from the step before.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from seqedit.editors.base import EditResult
from seqedit.models.loading import LoadedModel
from seqedit.utils.io import (
    json_default,
    load_tensors,
    read_jsonl,
    save_tensors_atomic,
    write_json_atomic,
    write_text_atomic,
)

RESULT_TABLES = ("norms", "timings", "requests", "checkpoints")
Status = Literal["running", "finished", "failed"]


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
    }
    if lm is not None:
        info.update({"device": str(lm.device), "dtype": str(lm.dtype), "model_source": lm.source})
    return info


class RunDirectoryError(RuntimeError):
    """The run directory is missing, not a run, or already holds a run."""


class RunStore:
    """Reads and writes one run directory (format: docs/design.md, "Run directory")."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        # Called with (table, rows) after rows are appended (experiment trackers, runner/trackers.py).
        self.observers: list[Callable[[str, list[dict[str, Any]]], None]] = []

    # ------------------------------------------------------------------ paths
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def progress_path(self) -> Path:
        return self.root / "progress.json"

    @property
    def ledger_dir(self) -> Path:
        return self.root / "ledger"

    def table_path(self, table: str) -> Path:
        return self.root / f"{table}.jsonl"

    def ledger_path(self, step: int) -> Path:
        return self.ledger_dir / f"step_{step:06d}.safetensors"

    def state_path(self, name: str, step: int) -> Path:
        return self.root / "state" / f"{name}_step_{step:06d}.safetensors"

    # ------------------------------------------------------------------ lifecycle
    def exists(self) -> bool:
        return self.progress_path.exists()

    def create(self, config_yaml: str, environment: Mapping[str, Any], kind: str = "edit") -> None:
        if self.exists():
            resume = f"resume it with `seqedit run --resume {self.root}` or " if kind == "edit" else ""
            raise RunDirectoryError(f"{self.root} already holds a run; {resume}choose another output_dir")
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config_path, config_yaml)
        write_json_atomic(self.root / "environment.json", dict(environment))
        self.write_progress(kind=kind, status="running", completed_steps=0, n_edits=0, message="started")

    def write_progress(
        self, *, kind: str, status: Status, completed_steps: int, n_edits: int, message: str = ""
    ) -> None:
        write_json_atomic(
            self.progress_path,
            {"kind": kind, "status": status, "completed_steps": completed_steps, "n_edits": n_edits,
             "message": message},
        )

    def read_progress(self) -> dict[str, Any]:
        if not self.progress_path.exists():
            raise RunDirectoryError(f"{self.root} is not a seqedit run directory (no progress.json)")
        return json.loads(self.progress_path.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ tables
    def append(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        written = [dict(r) for r in rows]
        lines = [json.dumps(r, default=json_default) + "\n" for r in written]
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
        """Drop everything recorded for steps after ``completed_steps`` (and any torn last line)."""
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
        if self.ledger_dir.exists():
            for file in self.ledger_dir.glob("step_*.safetensors"):
                if int(file.stem.split("_")[1]) > completed_steps:
                    file.unlink()

    def write_parquet_mirrors(self) -> None:
        import pandas as pd

        from seqedit.utils.io import atomic_path

        for table in RESULT_TABLES:
            rows = self.read(table)
            if not rows:
                continue
            frame = pd.DataFrame(rows)
            with atomic_path(self.root / f"{table}.parquet") as tmp:
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
        self, name: str, step: int, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None
    ) -> None:
        """State after ``step`` (editor memory, monitor baselines ...). Keyed by step so that a crash
        between writing it and recording the step as completed never mixes steps."""
        metadata = {"json": json.dumps(dict(meta or {}), default=json_default)}
        save_tensors_atomic(self.state_path(name, step), dict(tensors), metadata)

    def load_state(self, name: str, step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from safetensors import safe_open

        path = self.state_path(name, step)
        if not path.exists():
            raise RunDirectoryError(f"{path} is missing: cannot restore '{name}' after step {step}")
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("json", "{}"))
        return load_tensors(path), meta

    def prune_states(self, keep_step: int) -> None:
        """Remove state files of other steps (call after ``keep_step`` is recorded as completed)."""
        state_dir = self.root / "state"
        if state_dir.exists():
            for file in state_dir.glob("*_step_*.safetensors"):
                if int(file.stem.rsplit("_", 1)[1]) != keep_step:
                    file.unlink()

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_json_atomic(self.root / "summary.json", dict(summary))

