from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from seqedit import rundir
from seqedit.report.loading import RunDirectoryError, config_value, load_run


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def test_edit_run_tables_and_header(edit_run):
    assert edit_run.kind == "edit"
    assert edit_run.x_column == "n_edits"
    meta = edit_run.meta
    assert (meta.model, meta.method, meta.dataset, meta.n_edits, meta.batch_size) == (
        "smollm2-135m", "memit", "counterfact", 100, 5,
    )
    assert set(edit_run.sources) == {"norms", "checkpoints", "timings", "requests"}
    assert all(p.suffix == ".parquet" for p in edit_run.sources.values())
    assert edit_run.missing == []
    norms = edit_run.norms
    # 20 steps + step 0, 7 tracked matrices (5 edited + 2 neighbours).
    assert len(norms) == 21 * 7
    assert norms["edited"].sum() == 21 * 5
    assert str(norms["step"].dtype) == "Int64"
    assert set(edit_run.checkpoints["group"]) == {"edit", "downstream", "activation", "profile"}
    assert edit_run.is_synthetic


def test_jsonl_and_parquet_give_the_same_tables(edit_run_dir, tmp_path):
    copy = _copy(edit_run_dir, tmp_path)
    for parquet in copy.glob("*.parquet"):
        parquet.unlink()
    from_jsonl = load_run(copy)
    assert all(p.suffix == ".jsonl" for p in from_jsonl.sources.values())
    from_parquet = load_run(edit_run_dir)
    pd.testing.assert_frame_equal(from_jsonl.norms, from_parquet.norms, check_dtype=False)
    pd.testing.assert_frame_equal(from_jsonl.checkpoints, from_parquet.checkpoints, check_dtype=False)


def test_stale_parquet_mirror_is_ignored(edit_run_dir, tmp_path):
    copy = _copy(edit_run_dir, tmp_path)
    rows = [json.loads(line) for line in (copy / "timings.jsonl").read_text().splitlines()]
    rows.append({**rows[-1], "step": 21, "n_edits": 105})
    (copy / "timings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet = copy / "timings.parquet"
    old = (copy / "timings.jsonl").stat().st_mtime - 60
    os.utime(parquet, (old, old))
    run = load_run(copy)
    assert run.sources["timings"].name == "timings.jsonl"
    assert int(run.timings["step"].max()) == 21


def test_intervention_run_tolerates_missing_optional_files(intervention_run):
    assert intervention_run.kind == "intervention"
    assert intervention_run.x_column == "step"
    assert "requests.jsonl" in intervention_run.missing
    assert intervention_run.requests.empty
    assert set(intervention_run.checkpoints["group"]) == {"train", "downstream", "profile"}
    assert (intervention_run.norms["n_edits"] == 0).all()


@pytest.mark.parametrize("name", ["config.yaml", "progress.json", "norms"])
def test_missing_required_file_names_directory_and_file(edit_run_dir, tmp_path, name):
    copy = _copy(edit_run_dir, tmp_path)
    for file in copy.glob(f"{name}*" if name == "norms" else name):
        file.unlink()
    with pytest.raises(RunDirectoryError) as info:
        load_run(copy)
    message = str(info.value)
    assert str(copy) in message
    assert name in message
    assert "missing" in message


def test_malformed_jsonl_line_is_reported_with_its_line_number(second_edit_run_dir, tmp_path):
    copy = _copy(second_edit_run_dir, tmp_path)
    lines = (copy / "checkpoints.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-5]  # truncate one record
    (copy / "checkpoints.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirectoryError, match=r"checkpoints\.jsonl: line 3 is not valid JSON"):
        load_run(copy)


def test_corrupt_parquet_is_reported(edit_run_dir, tmp_path):
    copy = _copy(edit_run_dir, tmp_path)
    (copy / "norms.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(RunDirectoryError, match=r"norms\.parquet: cannot be read as Parquet"):
        load_run(copy)


def test_missing_required_column_is_reported(second_edit_run_dir, tmp_path):
    copy = _copy(second_edit_run_dir, tmp_path)
    rows = [json.loads(line) for line in (copy / "norms.jsonl").read_text().splitlines()]
    (copy / "norms.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "fro"}) + "\n"
                                              for r in rows))
    with pytest.raises(RunDirectoryError, match=r"norms\.jsonl: missing required column\(s\) fro"):
        load_run(copy)


def test_bad_progress_and_config_are_reported(second_edit_run_dir, tmp_path):
    copy = _copy(second_edit_run_dir, tmp_path)
    (copy / "progress.json").write_text(json.dumps({"kind": "finetune", "status": "finished"}))
    with pytest.raises(RunDirectoryError, match="'kind' must be 'edit' or 'intervention'"):
        load_run(copy)
    (copy / "progress.json").write_text("{not json")
    with pytest.raises(RunDirectoryError, match=r"progress\.json: not valid JSON"):
        load_run(copy)
    (copy / "progress.json").write_text(json.dumps({"kind": "edit"}))
    (copy / "config.yaml").write_text("- just\n- a list\n")
    with pytest.raises(RunDirectoryError, match=r"config\.yaml: expected a mapping"):
        load_run(copy)


def test_resumed_step_rows_keep_the_latest_and_relative_norm_is_derived(second_edit_run_dir, tmp_path):
    copy = _copy(second_edit_run_dir, tmp_path)
    rows = [json.loads(line) for line in (copy / "norms.jsonl").read_text().splitlines()]
    last = dict(rows[-1])
    last["fro"] = last["fro"] + 1.0  # the step re-run after a resume
    rows = [{k: v for k, v in r.items() if k != "fro_rel"} for r in [*rows, last]]
    (copy / "norms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    norms = load_run(copy).norms
    match = norms[(norms["step"] == last["step"]) & (norms["matrix"] == last["matrix"])]
    assert len(match) == 1
    assert match["fro"].iloc[0] == pytest.approx(last["fro"])
    assert match["fro_rel"].iloc[0] == pytest.approx(last["fro"] / last["fro0"])


def test_header_is_read_from_the_documented_fields_only():
    edit = {"name": "r", "model": "gpt2", "method": "rome", "dataset": {"name": "zsre"}, "num_edits": 8,
            "batch_size": 2}
    assert [config_value(edit, "edit", f) for f in ("name", "model", "method", "dataset", "n_edits", "batch_size")] \
        == ["r", "gpt2", "rome", "zsre", 8, 2]
    # Other spellings are not guessed: a config that does not follow the schema has no header.
    assert config_value({"editor": {"name": "memit"}}, "edit", "method") is None
    assert config_value({"data": {"limit": 200}}, "edit", "n_edits") is None
    intervention = {"kind": "lora", "model": "gpt2", "data": "sst2", "batch_size": 4, "steps": 9}
    assert config_value(intervention, "intervention", "method") == "lora"
    assert config_value(intervention, "intervention", "dataset") == "sst2"
    assert config_value(intervention, "intervention", "name") is None


def test_intervention_header(intervention_run):
    meta = intervention_run.meta
    assert (meta.name, meta.method, meta.model, meta.dataset, meta.batch_size) == (
        "intervention", "continued-pretraining", "smollm2-135m", "wikitext2", 8,
    )
    assert meta.n_edits is None


def _set_progress(run_dir: Path, **fields) -> None:
    progress = json.loads((run_dir / "progress.json").read_text())
    progress.update(fields)
    (run_dir / "progress.json").write_text(json.dumps({k: v for k, v in progress.items() if v is not None}))


def test_a_version_1_directory_loads_by_migration(second_edit_run_dir, tmp_path):
    current = load_run(second_edit_run_dir)
    assert current.progress.schema_version == rundir.SCHEMA_VERSION == 2
    copy = _copy(second_edit_run_dir, tmp_path)
    _set_progress(copy, schema_version=None)  # written before the schema was versioned
    old = load_run(copy)
    assert old.progress.schema_version == 1
    assert old.meta == current.meta and old.progress.completed_steps == current.progress.completed_steps
    pd.testing.assert_frame_equal(old.norms, current.norms)
    pd.testing.assert_frame_equal(old.checkpoints, current.checkpoints)


@pytest.mark.parametrize("version", [3, 0, "2", 2.0])
def test_an_unreadable_version_fails_with_one_line_naming_both_versions(second_edit_run_dir, tmp_path, version):
    copy = _copy(second_edit_run_dir, tmp_path)
    _set_progress(copy, schema_version=version)
    with pytest.raises(RunDirectoryError) as info:
        load_run(copy)
    message = str(info.value)
    assert f"progress.json: run directory schema version {version!r}; this seqedit reads versions 1, 2" in message
    assert str(copy) in message and "\n" not in message
