"""The ``seqedit`` command line: every command answers, bad input exits with a message, and (integration)
``predict`` and ``demo --quick`` work on the embedded model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from seqedit.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("models", "datasets", "methods", "predict", "run", "report", "compare", "demo", "sweep",
                    "intervene", "mend"):
        assert command in result.output


def test_models_and_methods():
    models = invoke("models")
    assert models.exit_code == 0 and "smollm2-135m" in models.output and "gpt_neox" in models.output
    methods = invoke("methods")
    assert methods.exit_code == 0
    for name in ("rome", "memit", "emmet", "alphaedit", "encore", "ft-l", "lora", "mend"):
        assert name in methods.output
    encore = invoke("methods", "encore")
    assert encore.exit_code == 0 and "norm_lambda" in encore.output and "smollm2" in encore.output
    assert invoke("methods", "nope").exit_code != 0


def test_datasets_without_a_data_directory(monkeypatch):
    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    result = runner.invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "builtin" in result.output and "241" in result.output
    assert "counterfact" in result.output  # listed, not found, with where to get it


def test_run_show_config_and_bad_config(tmp_path):
    shown = invoke("run", "--show-config")
    assert shown.exit_code == 0 and "num_edits" in shown.output and "downstream_tasks" in shown.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_edits: -3\n")
    result = invoke("run", str(bad))
    assert result.exit_code == 2
    assert "num_edits" in result.output and str(bad) in result.output.replace("\n", "")


def test_sweep_dry_run(tmp_path):
    result = invoke("sweep", "--grid", "method=memit,encore", "--set", "num_edits=4", "--set", "batch_size=2", "--out", str(tmp_path),
                    "--dry-run")
    assert result.exit_code == 0 and "method=encore" in result.output


@pytest.mark.integration
def test_predict_puts_paris_first(embedded_model):
    result = runner.invoke(app, ["predict", "The Eiffel Tower is located in the city of"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    first_row = next(line for line in result.output.splitlines() if line.strip().startswith("│      1") or
                     line.strip().startswith("│    1"))
    assert "' Paris'" in first_row


@pytest.mark.integration
def test_quick_demo_writes_both_runs_and_the_comparison(embedded_model, tmp_path):
    result = runner.invoke(app, ["demo", "--quick", "--output-dir", str(tmp_path)], env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    out = tmp_path / "quick"
    for method in ("memit", "encore"):
        progress = json.loads((out / method / "progress.json").read_text())
        assert progress["status"] == "finished" and progress["n_edits"] == 6
        assert (out / method / "report" / "index.html").exists()
    html = (out / "comparison" / "index.html").read_text()
    assert "memit" in html and "encore" in html and "data:image/png;base64" in html
    assert "Comparison report" in result.output


def test_study_dry_run_lists_the_runs(tmp_path):
    result = runner.invoke(app, ["study", "examples/study/seed-findings.yaml", "--dry-run", "-o", str(tmp_path)],
                           env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    for run in ("memit", "encore", "alphaedit", "emmet", "r-rome", "ft-l", "lora", "mend", "cpt-wd0", "lora-wd0.01"):
        assert run in result.output
    assert "0 of 1000 edits" in result.output and "0 of 500 steps" in result.output
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    bad = runner.invoke(app, ["study", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "no such study file" in bad.output


@pytest.mark.integration
@pytest.mark.data
def test_quick_study_runs_every_family_and_writes_the_findings(embedded_model, shared_data_dir, tmp_path):
    out, results = tmp_path / "study", tmp_path / "results"
    args = ["study", "examples/study/seed-findings-quick.yaml", "-o", str(out), "--collect", str(results)]
    result = runner.invoke(app, args, env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    for run in ("memit", "encore", "r-rome", "ft-l", "lora", "cpt-wd0"):
        progress = json.loads((out / run / "progress.json").read_text())
        assert progress["status"] == "finished", (run, progress)
        summary = json.loads((results / run / "summary.json").read_text())
        assert summary["n_steps"] > 0 and summary["method"]
        assert (results / run / "norms.parquet").exists() and not (results / run / "ledger").exists()
    page = (out / "_findings" / "findings.md").read_text()
    assert all(f"## {claim}:" in page for claim in ("C1", "C2", "C3", "C4", "C5"))
    again = runner.invoke(app, args, env={"COLUMNS": "150"})  # everything finished: nothing is re-run
    assert again.exit_code == 0 and again.output.count("finished") >= 6
