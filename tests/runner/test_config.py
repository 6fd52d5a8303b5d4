from __future__ import annotations

import pytest

from seqedit.runner.config import CheckpointSpec, ConfigError, config_reference, load_config


def test_checkpoint_schedules():
    assert CheckpointSpec(every=50).edit_counts(200, 10) == [50, 100, 150, 200]
    assert CheckpointSpec(every=None, log_spaced=True).edit_counts(200, 10) == [10, 20, 50, 100, 200]
    # every 25 with batches of 10: the batch that crosses each multiple, and the end
    assert CheckpointSpec(every=25).edit_counts(95, 10) == [30, 50, 80, 95]
    assert CheckpointSpec(every=None, at=[3, 7]).edit_counts(10, 5) == [5, 10]


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: encore\nnum_edits: 40\nevaluation:\n  downstream_tasks: [sst2]\n")
    config = load_config(path, ["batch_size=4", "evaluation.downstream_examples=7", "hparams.norm_lambda=5"])
    assert config.method == "encore" and config.num_edits == 40 and config.batch_size == 4
    assert config.evaluation.downstream_tasks == ["sst2"] and config.evaluation.downstream_examples == 7
    assert config.hparams == {"norm_lambda": 5}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("num_edits: 0\n", "num_edits"),
        ("evaluation:\n  downstream_tasks: [sst3]\n", "evaluation.downstream_tasks"),
        ("checkpoints:\n  evry: 3\n", "checkpoints.evry"),
        ("batch_size: 20\nnum_edits: 10\n", "top level"),
    ],
)
def test_invalid_fields_are_named(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_reference_documents_every_field():
    text = config_reference()
    for field in ("num_edits", "batch_size", "downstream_tasks", "log_spaced", "pca_k", "groups"):
        assert field in text


def test_config_knows_exactly_the_evaluators_tasks():
    from seqedit.evaluate import TEMPLATES
    from seqedit.runner.config import DOWNSTREAM_TASKS

    assert set(DOWNSTREAM_TASKS) == set(TEMPLATES)


@pytest.mark.parametrize("name", ["memit-200", "alphaedit-200", "encore-200"])
def test_example_configs_are_valid(name):
    from pathlib import Path

    path = Path(__file__).parents[2] / "examples" / f"{name}.yaml"
    config = load_config(path)
    assert config.method == name.split("-")[0] and config.num_edits == 200 and config.batch_size == 10
    assert config.checkpoints.edit_counts(200, 10) == [10, 20, 50, 100, 150, 200]
