"""A resumed run is the same experiment: the resolved editor settings are recorded at the start (every
method), and a resume with a changed config, changed overrides or changed editor defaults is refused with
a diff; only the fields documented as safe (name, checkpoints, health) may change."""

from __future__ import annotations

import json

import pytest
import yaml

from seqedit.editors import registry
from seqedit.editors.registry import create_editor, editor_names
from seqedit.models.tiny import build_tiny_model
from seqedit.runner.config import ConfigError
from seqedit.runner.drift import EDITOR_FILE, check_editor_on_resume, record_editor
from seqedit.runner.run import resume_experiment, run_experiment
from seqedit.runner.store import RunStore


@pytest.fixture
def tiny_lm():
    return build_tiny_model("llama", num_layers=4, hidden=48, seed=3)


@pytest.fixture
def half_run(tmp_path, tiny_run_config):
    config = tiny_run_config(tmp_path)
    # its own model: the run edits it in place, and a resume must start from the unedited one (tiny_lm)
    own = build_tiny_model("llama", num_layers=4, hidden=48, seed=3)
    outcome = run_experiment(config, show_progress=False, lm=own, max_steps=1)
    assert outcome.status == "running" and outcome.completed_steps == 1
    return config.output_dir


@pytest.mark.parametrize("method", [m for m in editor_names() if m != "mend"] + ["mend"])
def test_resolved_settings_are_recorded_for_every_method(tmp_path, tiny_lm, method):
    editor = create_editor(method, tiny_lm)
    record_editor(tmp_path, method, editor, tiny_lm)
    recorded = json.loads((tmp_path / EDITOR_FILE).read_text())
    assert recorded["method"] == method
    assert recorded["settings"] == editor.config.model_dump(mode="json")
    if "layers" in recorded["settings"]:  # per-model defaults are resolved, not left as null
        assert recorded["settings"]["layers"] or recorded["edited_layers"], recorded


def test_resume_refuses_changed_overrides_and_names_them(half_run, tiny_lm):
    before = {p.name: p.stat().st_mtime_ns for p in half_run.iterdir() if p.is_file()}
    with pytest.raises(ConfigError) as info:
        resume_experiment(half_run, lm=tiny_lm, show_progress=False,
                          overrides=["num_edits=4", "hparams.v_lr=5"])
    message = str(info.value)
    assert "num_edits: 6 -> 4" in message and "hparams.v_lr: null -> 5" in message
    after = {p.name: p.stat().st_mtime_ns for p in half_run.iterdir() if p.is_file()}
    assert after == before  # refused before touching anything


def test_resume_refuses_a_hand_edited_config(half_run, tiny_lm):
    config_path = half_run / "config.yaml"
    data = yaml.safe_load(config_path.read_text())
    data["seed"] = 7
    data["hparams"]["mom2_update_weight"] = 1.0
    config_path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        resume_experiment(half_run, lm=tiny_lm, show_progress=False)
    assert "seed: 0 -> 7" in str(info.value) and "hparams.mom2_update_weight" in str(info.value)


def test_resume_refuses_changed_editor_defaults(half_run, tiny_lm, monkeypatch):
    from seqedit.editors.memit import MEMIT

    original = MEMIT.default_config

    def shifted(lm=None, profile=None):
        config = original(lm, profile)
        config.v_lr = config.v_lr * 2  # a newer seqedit with another per-model default
        return config

    monkeypatch.setattr(MEMIT, "default_config", classmethod(lambda cls, lm=None, profile=None: shifted(lm, profile)))
    with pytest.raises(ConfigError, match=r"v_lr"):
        resume_experiment(half_run, lm=tiny_lm, show_progress=False)
    assert registry.make_config("memit", tiny_lm).v_lr == 2 * original(tiny_lm).v_lr


def test_safe_changes_are_accepted_and_recorded(half_run, tiny_lm):
    outcome = resume_experiment(half_run, lm=tiny_lm, show_progress=False,
                                overrides=["name=renamed", "checkpoints.every=2"])
    assert outcome.status == "finished" and outcome.n_edits == 6
    stored = yaml.safe_load((half_run / "config.yaml").read_text())
    assert stored["name"] == "renamed" and stored["checkpoints"]["every"] == 2
    steps = sorted({r["step"] for r in RunStore(half_run).read("checkpoints")})
    assert steps == [0, 2, 3]  # after the resume, a checkpoint every 2 edits (steps 2 and 3)


def test_older_run_without_editor_record_gets_one(tmp_path, tiny_lm):
    editor = create_editor("memit", tiny_lm)
    notes: list[str] = []
    check_editor_on_resume(tmp_path, "memit", editor, notes.append)
    assert (tmp_path / EDITOR_FILE).exists() and "cannot be checked" in notes[0]
    check_editor_on_resume(tmp_path, "memit", editor)  # now it matches
