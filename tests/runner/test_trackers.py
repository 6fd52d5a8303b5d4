"""Experiment trackers get the same numbers the run directory records (file-based backends, offline)."""

from __future__ import annotations

import importlib.util

import pytest

from seqedit.models.tiny import build_tiny_model
from seqedit.runner.run import run_experiment
from seqedit.runner.store import RunStore
from seqedit.runner.trackers import TrackerUnavailable, metrics_from_rows, open_trackers


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _expected(run_dir):
    """What the trackers should hold, computed from the run directory: {name: {n_edits: value}}."""
    store = RunStore(run_dir)
    expected: dict[str, dict[int, float]] = {}
    for table in ("norms", "timings", "checkpoints"):
        for n_edits, metrics in metrics_from_rows(table, store.read(table)).items():
            for name, value in metrics.items():
                expected.setdefault(name, {})[n_edits] = value
    return expected


def test_metrics_from_rows_keeps_edited_norms_timings_and_edit_and_downstream_scalars():
    norms = [
        {"step": 1, "n_edits": 2, "matrix": "m.3", "edited": True, "fro_rel": 1.01, "dist_from_init": 0.5},
        {"step": 1, "n_edits": 2, "matrix": "m.9", "edited": False, "fro_rel": 1.0, "dist_from_init": 0.0},
    ]
    checkpoints = [
        {"n_edits": 2, "group": "edit", "name": "efficacy_score", "scope": "all", "value": 0.75, "layer": None},
        {"n_edits": 2, "group": "downstream", "name": "sst2_accuracy", "scope": "sst2", "value": 0.6, "layer": None},
        {"n_edits": 2, "group": "activation", "name": "cka", "scope": "mlp", "value": 0.9, "layer": 3},
        {"n_edits": 2, "group": "edit", "name": "efficacy_score", "scope": "latest", "value": None, "layer": None},
    ]
    assert metrics_from_rows("norms", norms) == {2: {"norms/m.3/fro_rel": 1.01, "norms/m.3/dist_from_init": 0.5}}
    assert metrics_from_rows("checkpoints", checkpoints) == {
        2: {"edit/efficacy_score/all": 0.75, "downstream/sst2_accuracy/sst2": 0.6}
    }
    timings = [{"step": 1, "n_edits": 2, "edits_in_step": 2, "total_s": 3.5, "phase_solve_s": 1.25}]
    assert metrics_from_rows("timings", timings) == {2: {"timing/total_s": 3.5, "timing/phase_solve_s": 1.25}}


@pytest.mark.skipif(not (_installed("tensorboard") and _installed("mlflow")),
                    reason="needs tensorboard and mlflow (pip install 'seqedit[tensorboard,mlflow]')")
def test_tensorboard_and_mlflow_hold_the_run_directory_numbers(tmp_path, tiny_run_config, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tiny_run_config(tmp_path, trackers=["tensorboard", "mlflow"])
    outcome = run_experiment(config, lm=build_tiny_model("llama", num_layers=4, hidden=48, seed=3),
                             show_progress=False)
    assert outcome.status == "finished"
    expected = _expected(outcome.run_dir)
    assert {"timing/total_s", "edit/efficacy_score/all", "edit/efficacy_score/latest"} <= expected.keys()
    assert any(name.startswith("norms/") for name in expected)

    events = EventAccumulator(str(outcome.run_dir / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(expected)
    for name, by_step in expected.items():
        logged = {e.step: e.value for e in events.Scalars(name)}
        assert logged.keys() == by_step.keys(), name
        for step, value in by_step.items():
            assert logged[step] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, step)  # float32 events

    client = MlflowClient((outcome.run_dir / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("seqedit").experiment_id])
    assert run.info.run_name == config.label and run.info.status == "FINISHED"
    assert run.data.params["method"] == "memit"
    for name, by_step in expected.items():
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
        assert history == pytest.approx(by_step), name


@pytest.mark.skipif(_installed("wandb"), reason="wandb is installed; this checks the message when it is absent")
def test_a_missing_tracker_package_is_a_config_error_naming_the_extra(tmp_path):
    with pytest.raises(TrackerUnavailable, match=r"seqedit\[wandb\]"):
        open_trackers(["wandb"], tmp_path, "run")


@pytest.mark.skipif(not _installed("wandb"), reason="wandb is not installed (pip install 'seqedit[wandb]')")
def test_wandb_offline_run_is_written_under_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    trackers = open_trackers(["wandb"], tmp_path, "run", {"method": "memit"})
    trackers.observe("timings", [{"step": 1, "n_edits": 2, "total_s": 1.5}])
    trackers.close()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
