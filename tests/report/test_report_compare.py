from __future__ import annotations

import re

import pandas as pd
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from seqedit.cli.report import print_summary, register
from seqedit.report import load_run
from seqedit.report.compare import (
    build_comparison_figures,
    compare_edit_scores,
    compare_norm_growth,
    comparison_table,
    headline_frame,
    markdown_table,
    prepare_runs,
    run_labels,
)
from seqedit.report.figures import FigureResult, NotMeasured
from seqedit.report.style import format_ratio


def labelled_lines(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_comparison_writes_page_table_and_figures(comparison, edit_run, second_edit_run):
    out = comparison.parent
    page = comparison.read_text(encoding="utf-8")
    table = pd.read_csv(out / "summary.csv")
    assert list(table["run"]) == ["memit", "encore"]
    assert list(table["n_edits"]) == [100, 100]
    final = edit_run.norms[(edit_run.norms["step"] == 20) & edit_run.norms["edited"]]
    assert table.loc[0, "growth_mean"] == pytest.approx(final["fro_rel"].mean())
    assert table.loc[0, "growth_max"] > table.loc[1, "growth_max"] > 1.0
    assert table.loc[0, "edit_scope"] == "all"
    markdown = (out / "summary.md").read_text(encoding="utf-8")
    assert markdown.splitlines()[0].startswith("| run | edits | final ‖W‖ | growth × (mean)")
    assert len(markdown.splitlines()) == 4
    images = re.findall(r'<img src="data:image/png;base64,', page)
    pngs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    svgs = sorted(p.stem for p in (out / "figures").glob("*.svg"))
    assert len(images) == len(pngs) == 6 and pngs == svgs
    assert "<script" not in page


def test_overlays_runs_with_different_checkpoint_schedules(edit_run, second_edit_run):
    runs = prepare_runs([edit_run, second_edit_run])
    scores = compare_edit_scores(runs, "linear")
    assert isinstance(scores, FigureResult)
    first_panel = scores.figure.axes[0]
    lines = {line.get_label(): line for line in labelled_lines(first_panel)}
    assert set(lines) == {"memit", "encore"}
    # Each run is drawn at its own checkpoints: log-spaced for one, every 20 edits for the other.
    assert list(lines["memit"].get_xdata()) == [5, 10, 20, 40, 80, 100]
    assert list(lines["encore"].get_xdata()) == [20, 40, 60, 80, 100]
    # Shared y axis over all panels.
    assert {ax.get_ylim() for ax in scores.figure.axes if ax.get_visible()} == {(-0.02, 1.02)}
    growth = compare_norm_growth(runs, "linear")
    assert [len(labelled_lines(ax)) for ax in growth.figure.axes] == [2, 2, 2]
    final = second_edit_run.norms[(second_edit_run.norms["step"] == 10) & second_edit_run.norms["edited"]]
    assert f"encore ×{format_ratio(final['fro_rel'].mean())} mean" in growth.caption


def test_comparison_reports_measures_no_run_has(second_edit_run, tmp_path):
    other = load_run(second_edit_run.path)
    outcomes = build_comparison_figures(prepare_runs([second_edit_run, other]))
    missing = [o.key for o in outcomes if isinstance(o, NotMeasured)]
    assert missing == ["compare_activations"]


def test_labels_are_unique_when_methods_repeat(edit_run, second_edit_run):
    again = load_run(edit_run.path)
    labels = run_labels([edit_run, again, second_edit_run])
    assert len(set(labels)) == 3
    assert labels[2] == "encore"


def test_edit_and_intervention_runs_are_not_mixed(edit_run, intervention_run):
    with pytest.raises(ValueError, match="cannot overlay edit runs and intervention runs"):
        prepare_runs([edit_run, intervention_run])
    with pytest.raises(ValueError, match="at least one run"):
        prepare_runs([])


def test_intervention_comparison(intervention_run, tmp_path):
    from synthetic_run import write_synthetic_intervention_run

    other = write_synthetic_intervention_run(tmp_path / "lora", kind="lora", n_steps=40, checkpoint_every=10)
    runs = prepare_runs([intervention_run, load_run(other)])
    table = comparison_table(runs)
    assert list(table["run"]) == ["continued-pretraining", "lora"]
    assert table["train_loss_final"].notna().all()
    markdown = markdown_table(headline_frame(table))
    assert "s / step" in markdown and "edits" not in markdown
    outcomes = {o.key: o for o in build_comparison_figures(runs)}
    assert "compare_edit_scores" not in outcomes
    loss = outcomes["compare_train_loss"]
    assert [line.get_label() for line in labelled_lines(loss.figure.axes[0])] == list(table["run"])
    assert "at training step 40" in loss.caption


def test_cli_commands(failed_run_dir, tmp_path):
    # The failed run has norm rows only: the cheapest run to render, twice.
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(failed_run_dir), "-o", str(tmp_path / "r"), "--xscale", "linear"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "index.html").is_file()
    result = runner.invoke(
        app, ["compare", str(failed_run_dir), str(failed_run_dir), "-o", str(tmp_path / "c")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "growth × (mean)" in result.output and "encore (synthetic-encore)" in result.output
    assert (tmp_path / "c" / "summary.csv").is_file()
    console = Console(width=60, record=True)
    print_summary(console, tmp_path / "c" / "summary.md")
    narrow = console.export_text()
    assert "growth × (mean)" in narrow and max(len(line) for line in narrow.splitlines()) <= 60  # transposed
    bad = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2
    assert "not a directory" in bad.output


def test_collapse_cell_names_each_criterion_met_with_its_edit_count():
    from seqedit.report.compare import collapse_cell

    summary = {"collapse": {"perplexity": {"step": 30, "n_edits": 300, "value": 2.1},
                            "efficacy": None,
                            "norm_growth": {"step": 12, "n_edits": 120, "value": 2.4}}}
    assert collapse_cell(summary) == "norm_growth@120, perplexity@300"
    assert collapse_cell({"collapse": {"perplexity": None}}) == "none"
    assert collapse_cell({"n_edits": 10}) is None  # a run from before the criteria: nothing to say
