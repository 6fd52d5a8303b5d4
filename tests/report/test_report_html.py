from __future__ import annotations

import base64
import re

import pytest

from seqedit.report import RunDirectoryError, load_run, write_report
from seqedit.report.figures import FigureResult, NotMeasured, build_figures
from seqedit.report.html import protocol_table, render_run_page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG_RE = re.compile(r'<figure id="(\w+)">\n<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*">')
RUN_FIGURE_KEYS = {
    "norm_growth", "norm_profile", "weight_distance", "growth_decomposition", "edit_scores", "edit_magnitudes", "fluency", "downstream",
    "activation_norms", "activation_similarity", "residual_shares", "timing", "request_stats",
}


def embedded_images(page: str) -> dict[str, bytes]:
    return {key: base64.b64decode(data) for key, data in IMG_RE.findall(page)}


def test_report_embeds_every_figure_and_writes_png_and_svg(edit_report, edit_run):
    assert edit_report == edit_run.path / "report" / "index.html"
    page = edit_report.read_text(encoding="utf-8")
    images = embedded_images(page)
    assert page.count("<img ") == len(images)
    assert set(images) == RUN_FIGURE_KEYS
    for key, png in images.items():
        assert png.startswith(PNG_SIGNATURE)
        assert (edit_report.parent / "figures" / f"{key}.png").read_bytes() == png
        svg = (edit_report.parent / "figures" / f"{key}.svg").read_text(encoding="utf-8")
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # Captions with last-checkpoint numbers are on the page.
    assert "After 100 edits" in page
    assert page.count("<figcaption><b>Figure ") == len(images)


def test_report_is_self_contained(edit_report):
    page = edit_report.read_text(encoding="utf-8")
    assert "<script" not in page
    assert "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page


def test_report_header_and_protocol(edit_report, edit_run):
    page = edit_report.read_text(encoding="utf-8")
    for text in ("smollm2-135m", "memit", "counterfact", "batch size (edits per step)", "Synthetic run."):
        assert text in page
    assert "Evaluation protocol" in page
    table = protocol_table(edit_run)
    row = table[(table["metric"] == "efficacy_score") & table["scope (evaluated on)"].str.startswith("all")].iloc[0]
    assert row["definition"] == "prob_compare:new>true"
    assert row["measured at (number of edits)"] == "5, 10, 20, 40, 80, 100"
    assert "every edit made so far" in row["scope (evaluated on)"]
    assert "prob_compare:true&gt;new" in page  # the neighbourhood definition, escaped
    assert "summary.json" in page and "edited_norm_growth_max" in page


def test_report_lists_what_was_not_measured(second_edit_run):
    outcomes = build_figures(second_edit_run)
    drawn = {o.key: o for o in outcomes if isinstance(o, FigureResult)}
    assert set(drawn) == RUN_FIGURE_KEYS - {"activation_norms", "activation_similarity", "residual_shares"}
    # Checkpoints every 20 edits: a linear x axis.
    assert drawn["edit_scores"].figure.axes[0].get_xscale() == "linear"
    page = render_run_page(second_edit_run, [], [o for o in outcomes if isinstance(o, NotMeasured)])
    assert "Not measured in this run" in page
    assert "activation norms were not measured" in page
    assert "representation similarity was not measured" in page


def test_intervention_report(intervention_run_dir, tmp_path):
    index = write_report(intervention_run_dir, tmp_path / "intervention")
    page = index.read_text(encoding="utf-8")
    assert "Post-training intervention run" in page
    assert "Norms of the trained matrices" in page
    assert "Training loss" in page
    assert "edit metrics" not in page.lower().replace("no 'edit'", "")
    assert "requests.jsonl" not in page  # not expected for interventions, so not listed as missing
    assert len(embedded_images(page)) == 7


def test_unfinished_run_is_flagged(failed_run_dir):
    copy = failed_run_dir
    run = load_run(copy)
    assert run.checkpoints.empty and run.timings.empty
    page = write_report(copy).read_text(encoding="utf-8")
    assert "This run is failed" in page and "EditError: diverged" in page
    assert "No checkpoints were recorded" in page
    assert page.count("<img ") == 4  # the norm figures only


def test_report_of_a_broken_directory_fails_clearly(tmp_path):
    with pytest.raises(RunDirectoryError, match="not a directory"):
        write_report(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    # progress.json is read first (it holds the schema version the rest is written in)
    with pytest.raises(RunDirectoryError, match=r"progress\.json: required file is missing"):
        write_report(tmp_path / "empty")
    (tmp_path / "empty" / "progress.json").write_text('{"kind": "edit", "schema_version": 2}')
    with pytest.raises(RunDirectoryError, match=r"config\.yaml: required file is missing"):
        write_report(tmp_path / "empty")
