"""Synthetic run directories (every file of the run-directory format) shared by the report tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from synthetic_run import write_synthetic_edit_run, write_synthetic_intervention_run

from seqedit.report.loading import RunData, load_run


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def edit_run_dir(runs_root: Path) -> Path:
    """MEMIT-like: 20 steps of 5 edits, log-spaced checkpoints, activations measured."""
    return write_synthetic_edit_run(runs_root / "memit", method="memit", growth=1.0, schedule="log", seed=1)


@pytest.fixture(scope="session")
def second_edit_run_dir(runs_root: Path) -> Path:
    """A regularised method on another schedule: 10 steps of 10 edits, checkpoints every 2 steps, no activations."""
    return write_synthetic_edit_run(
        runs_root / "encore", method="encore", growth=0.2, n_steps=10, batch_size=10, schedule="linear",
        measure_activations=False, parquet=False, seed=2,
    )


@pytest.fixture(scope="session")
def intervention_run_dir(runs_root: Path) -> Path:
    return write_synthetic_intervention_run(runs_root / "intervention", n_steps=60, checkpoint_every=20, seed=3)


@pytest.fixture(scope="session")
def failed_run_dir(second_edit_run_dir: Path, runs_root: Path) -> Path:
    """A run that failed after 3 steps, before any checkpoint, timing or request was written."""
    copy = Path(shutil.copytree(second_edit_run_dir, runs_root / "failed"))
    (copy / "progress.json").write_text(
        '{"kind": "edit", "status": "failed", "completed_steps": 3, "n_edits": 30, "message": "EditError: diverged"}'
    )
    for stem in ("checkpoints", "timings", "requests", "summary"):
        for file in copy.glob(f"{stem}.*"):
            file.unlink()
    return copy


@pytest.fixture(scope="session")
def edit_run(edit_run_dir: Path) -> RunData:
    return load_run(edit_run_dir)


@pytest.fixture(scope="session")
def second_edit_run(second_edit_run_dir: Path) -> RunData:
    return load_run(second_edit_run_dir)


@pytest.fixture(scope="session")
def intervention_run(intervention_run_dir: Path) -> RunData:
    return load_run(intervention_run_dir)


@pytest.fixture(scope="session")
def edit_report(edit_run_dir: Path) -> Path:
    """The report of the edit run, written once for all tests that read it."""
    from seqedit.report import write_report

    return write_report(edit_run_dir)


@pytest.fixture(scope="session")
def comparison(edit_run_dir: Path, second_edit_run_dir: Path, runs_root: Path) -> Path:
    from seqedit.report import write_comparison

    return write_comparison([edit_run_dir, second_edit_run_dir], runs_root / "comparison")
