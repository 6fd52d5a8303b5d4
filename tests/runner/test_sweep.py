"""Sweeps: grid parsing and expansion, and a local sweep of two tiny runs (Ray when installed)."""

from __future__ import annotations

import importlib.util

import pytest

from seqedit.models.tiny import build_tiny_model
from seqedit.runner.config import ConfigError, RunConfig
from seqedit.runner.store import RunStore
from seqedit.runner.sweep import expand, parse_grid, run_sweep


def test_parse_grid_forms():
    grid = parse_grid(["method=memit,encore", "batch_size=[1, 10]", "hparams.norm_lambda=5"])
    assert grid == {"method": ["memit", "encore"], "batch_size": [1, 10], "hparams.norm_lambda": [5]}
    with pytest.raises(ConfigError):
        parse_grid(["method"])


def test_expand_makes_one_named_run_per_combination(tmp_path):
    base = RunConfig(num_edits=20)
    points = expand(base, parse_grid(["method=memit,encore", "batch_size=1,10"]), tmp_path)
    assert [p.label for p in points] == [
        "method=memit_batch_size=1", "method=memit_batch_size=10",
        "method=encore_batch_size=1", "method=encore_batch_size=10",
    ]
    assert {p.config.output_dir.parent for p in points} == {tmp_path}
    assert points[3].config.method == "encore" and points[3].config.batch_size == 10


def _tiny_model_dir(tmp_path):
    tiny = build_tiny_model("llama", num_layers=3, hidden=32, seed=5)
    path = tmp_path / "tiny-model"
    tiny.model.save_pretrained(path, safe_serialization=True)
    tiny.tokenizer.save_pretrained(path)
    return path


def _sweep_points(tmp_path, tiny_run_config):
    base = tiny_run_config(tmp_path, model=str(_tiny_model_dir(tmp_path)), num_edits=2, batch_size=2,
                           hparams={"layers": [1], "v_num_grad_steps": 2, "mom2_corpus": "builtin",
                                    "mom2_n_samples": 10, "mom2_max_length": 32, "context_count": 0})
    return expand(base, parse_grid(["method=memit,encore"]), tmp_path / "sweep")


def test_local_sweep_runs_every_point(tmp_path, tiny_run_config):
    points = _sweep_points(tmp_path, tiny_run_config)
    outcomes = run_sweep(points)
    assert [o["status"] for o in outcomes] == ["finished", "finished"]
    for point in points:
        assert RunStore(point.config.output_dir).read_progress()["status"] == "finished"
    again = run_sweep(points)  # finished runs are resumed, i.e. left as they are
    assert [o["status"] for o in again] == ["finished", "finished"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'seqedit[ray]')")
def test_ray_sweep(tmp_path, tiny_run_config):
    import ray

    points = _sweep_points(tmp_path, tiny_run_config)
    try:
        ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    except Exception as exc:  # the machine cannot host a local Ray cluster: an environment limit, not a seqedit bug
        pytest.skip(f"a local Ray cluster could not start here: {exc}")
    try:
        outcomes = run_sweep(points, backend="ray")
    finally:
        ray.shutdown()
    assert [o["status"] for o in outcomes] == ["finished", "finished"]
