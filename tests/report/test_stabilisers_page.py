"""The stabiliser comparison page: the shared checkpoint, the recommendation rule and the activity figures."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import pandas as pd

from seqedit.report.loading import RunData
from seqedit.report.stabilisers import (
    EFFICACY_TOLERANCE,
    StabiliserRun,
    _activity,
    common_checkpoint,
    recommendation,
)


def _run(name: str, at: dict[int, dict[str, float]]) -> StabiliserRun:
    return StabiliserRun(name=name, data=cast(RunData, SimpleNamespace()), edits=max(at), checkpoints=sorted(at),
                         seconds_per_edit=None, at=at)


def _point(growth: float, efficacy: float, perplexity: float) -> dict[str, float]:
    return {"fro_rel_mean": 1 + growth, "efficacy_score": efficacy, "perplexity": perplexity}


START = _point(0.0, 0.3, 15.0)


def test_the_common_checkpoint_is_the_largest_every_run_has_reached():
    runs = [_run("a", {0: START, 100: START, 200: START, 300: START}), _run("b", {0: START, 100: START, 200: START})]
    assert common_checkpoint(runs) == 200
    assert common_checkpoint([_run("a", {0: START, 100: START}), _run("b", {0: START})]) is None


def test_the_recommendation_picks_the_least_growth_among_runs_that_keep_efficacy():
    runs = [
        _run("memit", {0: START, 200: _point(0.05, 0.95, 16.0)}),
        # grows least but loses too much efficacy: not recommended
        _run("shrinker", {0: START, 200: _point(0.001, 0.95 - 2 * EFFICACY_TOLERANCE, 15.1)}),
        _run("steady", {0: START, 200: _point(0.01, 0.95 - EFFICACY_TOLERANCE / 2, 15.5)}),
    ]
    lines = recommendation(runs, 200)
    assert "**steady**" in lines[0] and "0.0100" in lines[0] and "0.0500" in lines[0]
    assert "shrinker" in lines[1]
    assert "shrinker (+0.10" in lines[2]  # the smallest perplexity rise, whatever its efficacy


def test_the_recommendation_says_when_nothing_beats_the_baseline_or_nothing_is_shared():
    runs = [_run("memit", {0: START, 200: _point(0.01, 0.9, 16.0)}), _run("x", {0: START, 200: _point(0.02, 0.9, 16.0)})]
    assert "none grows the edited matrices less than memit" in recommendation(runs, 200)[0]
    assert "No checkpoint" in recommendation(runs, None)[0]


def test_the_activity_counts_each_batch_once_and_nas_per_request():
    requests = pd.DataFrame({
        "step": [1, 1, 2, 2, 3, 3],
        "budget_matrices_scaled": [0, 0, 2, 2, 3, 3],
        "budget_min_factor": [1.0, 1.0, 0.9, 0.9, 0.8, 0.8],
        "nas_skipped": [False, True, False, False, True, True],
        "nas_scale": [1.0, 0.0, 0.5, 0.5, 0.0, 0.0],
    })
    activity: dict[str, Any] = _activity(cast(RunData, SimpleNamespace(requests=requests)))
    assert activity["batches"] == 3
    assert activity["budget_batches_acting"] == 2 and activity["budget_matrix_rescales"] == 5
    assert math.isclose(activity["budget_min_factor"], 0.8)
    assert activity["nas_skipped_requests"] == 3


def test_the_activity_says_how_often_prune_acted_and_how_close_the_update_came():
    requests = pd.DataFrame({"step": [1, 1, 2, 2, 3, 3], "prune_restrained_values": [0, 0, 0, 0, 2, 2],
                             "prune_sigma_ratio_max": [0.5, 0.5, 0.9, 0.9, 1.2, 1.2]})
    activity: dict[str, Any] = _activity(cast(RunData, SimpleNamespace(requests=requests)))
    assert activity["prune_batches_acting"] == 1 and math.isclose(activity["prune_restrained_values_mean"], 2 / 3)
    assert activity["prune_sigma_ratio_last"] == 1.2


def test_the_committed_stabiliser_page_rebuilds_from_the_committed_results(tmp_path):
    """scripts/build_stabilisers.py reads only results/: the page and the README's sentences rebuild."""
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    root = Path(__file__).resolve().parents[2]
    if not any((root / "results" / "stabilisers").glob("*/progress.json")):
        pytest.skip("no committed stabiliser results")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- stabilisers:start -->\nold\n<!-- stabilisers:end -->\n", encoding="utf-8")
    subprocess.run([sys.executable, str(root / "scripts" / "build_stabilisers.py"), "--docs", str(tmp_path / "docs"),
                    "--readme", str(readme)], check=True, capture_output=True)
    page = (tmp_path / "docs" / "stabilisers.md").read_text(encoding="utf-8")
    assert "## Recommendation" in page and "| memit |" in page
    assert (tmp_path / "docs" / "images" / "stabilisers" / "stabilisers_norms.png").stat().st_size > 0
    sentences = readme.read_text(encoding="utf-8").split("<!-- stabilisers:start -->\n")[1].split("\n<!--")[0]
    assert "old" not in sentences and "edits" in sentences
    assert sentences in (root / "README.md").read_text(encoding="utf-8")
    assert page == (root / "docs" / "stabilisers.md").read_text(encoding="utf-8")


def test_an_unfinished_run_waits_until_it_reaches_the_finished_runs_checkpoint():
    from seqedit.report.stabilisers import compared_runs

    done = {0: START, 100: START, 1000: _point(0.05, 0.95, 16.0)}
    runs = [_run("memit", done), _run("encore", done), _run("memit-nas", {0: START, 100: START})]
    runs[2].status = "running"
    n, compared = compared_runs(runs)
    assert n == 1000 and [r.name for r in compared] == ["memit", "encore"]
    runs[2].at[1000], runs[2].checkpoints = _point(0.01, 0.93, 15.5), [0, 100, 1000]  # it got there
    assert [r.name for r in compared_runs(runs)[1]] == ["memit", "encore", "memit-nas"]
    # while nothing has finished, the runs are compared where all of them have been
    early = [_run("memit", done), _run("memit-nas", {0: START, 100: START})]
    for run in early:
        run.status = "running"
    assert compared_runs(early) == (100, early)


def test_an_unfinished_run_is_read_against_the_method_it_stabilises_at_its_latest_checkpoint():
    from seqedit.report.stabilisers import unfinished_pairs

    def of(method: str, name: str, at: dict[int, dict[str, float]], status: str = "finished") -> StabiliserRun:
        run = _run(name, at)
        run.data, run.status = cast(RunData, SimpleNamespace(config={"method": method})), status
        return run

    full = {0: START, 100: START, 500: _point(0.05, 0.97, 16.0), 1000: _point(0.1, 0.95, 17.0)}
    memit, encore = of("memit", "memit", full), of("encore", "encore", full)
    prune = of("memit", "memit-prune", {0: START, 100: START, 500: _point(0.02, 0.96, 15.5)}, "running")
    early = of("encore", "encore-nas", {0: START}, "running")  # no checkpoint after the start yet
    assert unfinished_pairs([memit, encore, prune, early], [prune, early]) == [(prune, memit, 500)]
    # without a finished run of its method there is nothing to read it against
    assert unfinished_pairs([encore, prune], [prune]) == []
