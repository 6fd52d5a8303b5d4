"""The report on a run directory the runner really wrote (a tiny random model, a few MEMIT edits), and the
schema version of such a directory: the current one recorded, an older one migrated, a newer one refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from seqedit import rundir
from seqedit.report.loading import RunDirectoryError, load_run
from seqedit.runner.config import RunConfig
from seqedit.runner.run import run_experiment
from seqedit.runner.store import RunStore

TINY_MEMIT = {"layers": [1, 2], "v_num_grad_steps": 4, "mom2_corpus": "builtin", "mom2_n_samples": 20,
              "mom2_max_length": 64, "context_count": 1}


@pytest.fixture(scope="module")
def real_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as patch:  # no data directory, a private cache
        patch.delenv("SEQEDIT_DATA_DIR", raising=False)
        patch.setenv("SEQEDIT_CACHE_DIR", str(root / "cache"))
        config = RunConfig.model_validate({
            "name": "tiny-memit", "model": "tiny-llama", "method": "memit", "hparams": dict(TINY_MEMIT),
            "dataset": {"name": "builtin"}, "num_edits": 6, "batch_size": 2, "checkpoints": {"every": 4},
            "probe": {"texts": 4, "prompts": 4, "max_tokens": 24, "pca_k": 3}, "evaluation": {"batch_size": 8},
            "output_dir": str(root / "run"),
        })
        outcome = run_experiment(config, show_progress=False)
    assert outcome.status == "finished" and outcome.completed_steps == 3
    return outcome.run_dir


def test_the_runner_records_the_schema_version_and_the_documented_columns(real_run_dir):
    progress = json.loads((real_run_dir / rundir.PROGRESS).read_text())
    assert progress[rundir.VERSION_FIELD] == rundir.SCHEMA_VERSION
    for name in (rundir.CONFIG, rundir.ENVIRONMENT, rundir.SUMMARY, rundir.EDITOR, rundir.HEALTH):
        assert (real_run_dir / name).is_file(), name
    store = RunStore(real_run_dir)
    columns = {
        rundir.NORMS: (*rundir.NORM_REQUIRED, "layer", "kind", "edited", "fro0", "fro_rel", "dist_from_init"),
        rundir.CHECKPOINTS: (*rundir.CHECKPOINT_REQUIRED, *rundir.CHECKPOINT_OPTIONAL),
        rundir.TIMINGS: (*rundir.TIMING_REQUIRED, *rundir.TIMING_OPTIONAL),
        rundir.REQUESTS: rundir.REQUEST_REQUIRED,
    }
    for table, expected in columns.items():
        rows = store.read(table)
        assert rows, table
        absent = [c for c in expected if any(c not in row for row in rows)]
        assert absent == [], (table, absent)


def test_the_report_reads_a_real_run(real_run_dir, tmp_path):
    from seqedit.report import write_report

    run = load_run(real_run_dir)
    meta = run.meta
    assert (meta.name, meta.model, meta.method, meta.dataset, meta.n_edits, meta.batch_size) == (
        "tiny-memit", "tiny-llama", "memit", "builtin", 6, 2,
    )
    assert run.progress.schema_version == rundir.SCHEMA_VERSION and run.progress.status == "finished"
    assert not run.is_synthetic and run.missing == []
    # 3 steps of 2 edits: the edited matrices (layers 1 and 2) have a row after every step and grew from W0.
    edited = run.norms[run.norms["edited"]]
    assert set(edited["layer"].dropna()) == {1, 2}
    rows = run.norms[run.norms["matrix"].isin(set(edited["matrix"]))]
    assert sorted(set(rows["n_edits"])) == [0, 2, 4, 6]
    last = edited[edited["step"] == 3]
    assert (last["dist_from_init"] > 0).all()
    assert len(run.requests) == 6
    html = write_report(real_run_dir, tmp_path / "report").read_text(encoding="utf-8")
    assert "tiny-llama" in html and "memit" in html and "Synthetic run" not in html


def test_a_real_version_1_directory_loads_and_resumes_its_version(real_run_dir, tmp_path):
    copy = Path(shutil.copytree(real_run_dir, tmp_path / "old"))
    progress = json.loads((copy / rundir.PROGRESS).read_text())
    del progress[rundir.VERSION_FIELD]  # as written before the schema was versioned, and before editor.json
    (copy / rundir.PROGRESS).write_text(json.dumps(progress))
    (copy / rundir.EDITOR).unlink()
    old, current = load_run(copy), load_run(real_run_dir)
    assert old.progress.schema_version == 1
    assert old.meta == current.meta
    pd.testing.assert_frame_equal(old.norms, current.norms)
    assert RunStore(copy).read_progress()[rundir.VERSION_FIELD] == rundir.SCHEMA_VERSION  # migrated on reading


def test_a_newer_version_is_refused_by_the_report_and_the_runner(real_run_dir, tmp_path):
    copy = Path(shutil.copytree(real_run_dir, tmp_path / "new"))
    progress = json.loads((copy / rundir.PROGRESS).read_text())
    (copy / rundir.PROGRESS).write_text(json.dumps({**progress, rundir.VERSION_FIELD: 3}))
    expected = "run directory schema version 3; this seqedit reads versions 1, 2"
    with pytest.raises(RunDirectoryError, match=expected):
        load_run(copy)
    with pytest.raises(rundir.SchemaVersionError, match=expected):
        RunStore(copy).read_progress()  # what a resume, an export or a collection reads first
