"""Divergence and collapse detection (runner/health.py), valid JSON for non-finite values, and both wired
into a tiny run: a blow-up stops the run as failed, a collapse with stop_on_collapse finishes it."""

from __future__ import annotations

import json
import math

import pytest

from seqedit.models.tiny import build_tiny_model
from seqedit.runner.health import HealthMonitor, HealthSpec
from seqedit.runner.run import run_experiment
from seqedit.runner.store import RunStore
from seqedit.utils.io import dumps_row, finite_row


@pytest.fixture
def tiny_lm():
    return build_tiny_model("llama", num_layers=4, hidden=48, seed=3)


def _norm(step: int, matrix: str, fro: float, fro0: float, step_delta: float, edited: bool = True) -> dict:
    return {"step": step, "n_edits": 2 * step, "matrix": matrix, "fro": fro, "fro0": fro0, "fro_rel": fro / fro0,
            "step_delta_fro": step_delta, "edited": edited}


def _ppl(step: int, value: float) -> dict:
    return {"step": step, "n_edits": 2 * step, "group": "downstream", "name": "perplexity", "value": value}


def _efficacy(step: int, value: float) -> dict:
    return {"step": step, "n_edits": 2 * step, "group": "edit", "name": "efficacy_score", "scope": "latest",
            "value": value}


def test_collapse_criteria_record_the_first_step_each_is_met():
    health = HealthMonitor(HealthSpec())
    health.observe_checkpoint(0, 0, [_ppl(0, 10.0)])
    health.observe_norms(1, 2, [_norm(1, "a", 10.5, 10.0, 0.5)])
    health.observe_checkpoint(1, 2, [_ppl(1, 19.9), _efficacy(1, 0.4)])  # 1.99x; one low checkpoint
    assert all(hit is None for hit in health.collapse.values())
    health.observe_norms(2, 4, [_norm(2, "a", 20.5, 10.0, 0.5)])  # ‖W‖/‖W0‖ 2.05 > 2
    health.observe_checkpoint(2, 4, [_ppl(2, 20.0), _efficacy(2, 0.3)])  # 2x; second low checkpoint
    health.observe_checkpoint(3, 6, [_ppl(3, 50.0), _efficacy(3, 0.1)])  # later hits do not move the first
    c = health.collapse
    assert c["perplexity"]["step"] == 2 and c["perplexity"]["value"] == pytest.approx(2.0)
    assert c["efficacy"]["step"] == 2 and c["efficacy"]["value"] == pytest.approx(0.3)
    assert c["norm_growth"]["step"] == 2 and c["norm_growth"]["n_edits"] == 4
    assert c["non_finite"] is None
    # A good checkpoint breaks the efficacy streak.
    fresh = HealthMonitor(HealthSpec())
    for step, value in [(1, 0.4), (2, 0.9), (3, 0.4)]:
        fresh.observe_checkpoint(step, 2 * step, [_efficacy(step, value)])
    assert fresh.collapse["efficacy"] is None


def test_divergence_checks_and_their_actions():
    spec = HealthSpec.model_validate({"divergence": {"step_change_limit": 0.5, "no_op_edit": "stop"}})
    health = HealthMonitor(spec)
    assert health.observe_norms(1, 2, [_norm(1, "a", 10.1, 10.0, 0.1)]) == []
    blow_up = health.observe_norms(2, 4, [_norm(2, "a", 16.0, 10.0, 6.0)])  # one step moved 0.6 of ‖W0‖
    assert [(e.check, e.action) for e in blow_up] == [("step_change", "stop")]
    assert HealthMonitor.stopping(blow_up) is blow_up[0]
    nothing = health.observe_norms(3, 6, [_norm(3, "a", 16.0, 10.0, 1e-7), _norm(3, "b", 5.0, 5.0, 0.0, False)])
    assert [e.check for e in nothing] == ["no_op_edit"]  # 1e-8 of ‖W0‖: rounding, not an edit
    assert health.observe_norms(4, 8, [_norm(4, "a", 16.0, 10.0, 1e-4)]) == []
    nan = health.observe_norms(5, 10, [finite_row(_norm(5, "a", math.nan, 10.0, math.nan))])
    assert {(e.kind, e.check) for e in nan} == {("divergence", "non_finite"), ("collapse", "non_finite")}
    off = HealthMonitor(HealthSpec.model_validate({"divergence": {"step_change": "off"}}))
    assert off.observe_norms(1, 2, [_norm(1, "a", 16.0, 10.0, 6.0)]) == []


def test_replay_from_rows_equals_live_feeding():
    norms = [_norm(s, "a", 10.0 + 6 * s, 10.0, 6.0) for s in (1, 2)] + [_norm(0, "a", 10.0, 10.0, 0.0)]
    checkpoints = [_ppl(0, 10.0), _ppl(2, 30.0)]
    live = HealthMonitor(HealthSpec())
    live.observe_norms(0, 0, [norms[2]])
    live.observe_checkpoint(0, 0, [checkpoints[0]])
    for step in (1, 2):
        live.observe_norms(step, 2 * step, [norms[step - 1]])
    live.observe_checkpoint(2, 4, [checkpoints[1]])
    replayed = HealthMonitor(HealthSpec())
    replayed.replay(norms, checkpoints)
    assert replayed.report() == live.report()


def test_non_finite_values_are_written_as_null_with_a_flag():
    row = {"step": 1, "value": math.nan, "spectral": math.inf, "trace": [1.0, -math.inf], "ok": 2.5}
    line = dumps_row(row)
    parsed = json.loads(line, parse_constant=lambda token: pytest.fail(f"bare {token} in JSON"))
    assert parsed == {"step": 1, "value": None, "spectral": None, "trace": [1.0, None], "ok": 2.5,
                      "non_finite": ["value", "spectral", "trace"]}


def test_blow_up_stops_the_run_as_failed_with_the_reason(tmp_path, tiny_run_config, tiny_lm):
    # Any real edit moves a matrix by more than 1e-12 of its norm: the first step trips the check.
    config = tiny_run_config(tmp_path, health={"divergence": {"step_change_limit": 1e-12}})
    outcome = run_experiment(config, show_progress=False, lm=tiny_lm)
    assert outcome.status == "failed" and outcome.completed_steps == 1
    store = RunStore(config.output_dir)
    progress = store.read_progress()
    assert progress["status"] == "failed" and "step_change" in progress["message"]
    summary = json.loads((config.output_dir / "summary.json").read_text())
    assert summary["health"]["divergence"][0]["check"] == "step_change"
    assert (config.output_dir / "norms.parquet").exists()
    assert max(r["step"] for r in store.read("norms")) == 1


def test_stop_on_collapse_finishes_the_run_at_the_first_hit(tmp_path, tiny_run_config, tiny_lm):
    config = tiny_run_config(
        tmp_path,
        health={"collapse": {"fro_rel_limit": 1.0 + 1e-12}, "stop_on_collapse": True,
                "divergence": {"step_change": "flag"}},
    )
    outcome = run_experiment(config, show_progress=False, lm=tiny_lm)
    assert outcome.status == "finished" and outcome.completed_steps == 1 and outcome.n_edits == 2
    summary = json.loads((config.output_dir / "summary.json").read_text())
    hit = summary["collapse"]["norm_growth"]
    assert hit["step"] == 1 and hit["n_edits"] == 2 and hit["value"] > 1.0
    assert summary["collapse"]["perplexity"] is None  # no data directory: perplexity is not measured
    progress = RunStore(config.output_dir).read_progress()
    assert progress["status"] == "finished" and "norm_growth" in progress["message"]
    health_file = json.loads((config.output_dir / "health.json").read_text())
    assert health_file["collapse"] == summary["collapse"]


def test_an_edit_that_changes_nothing_is_flagged(tmp_path, tiny_run_config, tiny_lm):
    """MEMIT with v_lr 1e30: the target optimisation ends at δ = 0, the weights move by rounding only."""
    tiny_memit = tiny_run_config(tmp_path).hparams
    config = tiny_run_config(tmp_path, hparams={**tiny_memit, "v_lr": 1e30}, num_edits=2)
    outcome = run_experiment(config, show_progress=False, lm=tiny_lm)
    assert outcome.status == "finished"
    health = json.loads((config.output_dir / "health.json").read_text())
    assert "divergence:no_op_edit" in health["flags"], health

