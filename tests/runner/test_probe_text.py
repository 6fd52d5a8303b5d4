"""Activation probes and key statistics: a probe split that shares paragraphs with the statistics sample is
refused; the default split shares none; the legacy null keeps its probes and records the overlap, and a run
started before the field existed resumes with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqedit.models.tiny import build_tiny_model
from seqedit.runner.config import ConfigError
from seqedit.runner.measure import PROBE_SPLIT, check_probe_text, probe_snippets


def _wikitext(split: str, n: int) -> str:
    lines = [" = Article = ", ""]
    for i in range(n):
        lines += [f" The {split} paragraph {i} is about a harbour town , its ships and the long winter in the "
                  f"north , where paragraph {i} of the {split} split ends . ", ""]
    return "\n".join(lines)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "text").mkdir()
    for split in ("test", "valid"):
        (tmp_path / "text" / f"wikitext2-{split}.txt").write_text(_wikitext(split, 12), encoding="utf-8")
    monkeypatch.setenv("SEQEDIT_DATA_DIR", str(tmp_path))
    return tmp_path


def _config(tiny_run_config, tmp_path: Path, probes: str | None, corpus: str = "wikitext2"):
    config = tiny_run_config(tmp_path, text={"probes": probes})
    # statistics on the whole test split: any probe snippet of that split is a statistics paragraph
    return config.model_copy(update={"hparams": {**config.hparams, "mom2_corpus": corpus, "mom2_n_samples": 12}})


def test_explicit_overlapping_probes_are_refused(data_dir, tiny_run_config, tmp_path) -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64)
    config = _config(tiny_run_config, tmp_path, "wikitext2:test")
    snippets, _, split = probe_snippets(config)
    with pytest.raises(ConfigError, match=r"text\.probes.*4 of 4 .*'wikitext2:test'.*wikitext2:valid"):
        check_probe_text(config, lm, snippets, split)


def test_other_split_is_disjoint_and_recorded(data_dir, tiny_run_config, tmp_path) -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64)
    config = _config(tiny_run_config, tmp_path, "wikitext2:valid")
    snippets, description, split = probe_snippets(config)
    assert description == "4 wikitext2-valid snippets" and all(" valid " in s for s in snippets)
    record = check_probe_text(config, lm, snippets, split)
    assert record["probes"] == {"split": "wikitext2:valid", "snippets": 4, "explicit": True, "shared_with_statistics": 0}
    assert record["statistics"] == {"split": "wikitext2:test", "paragraphs": 12, "fallback": False}
    # statistics moved to the valid split instead: the explicit test-split probes pass
    config = _config(tiny_run_config, tmp_path, "wikitext2:test", corpus="wikitext2:valid")
    snippets, _, split = probe_snippets(config)
    assert check_probe_text(config, lm, snippets, split)["probes"]["shared_with_statistics"] == 0


def test_default_probes_are_the_valid_split_and_disjoint(data_dir, tiny_run_config, tmp_path) -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64)
    config = tiny_run_config(tmp_path)
    config = config.model_copy(update={"hparams": {**config.hparams, "mom2_corpus": "wikitext2", "mom2_n_samples": 12}})
    assert config.text.probes == "wikitext2:valid"
    snippets, _, split = probe_snippets(config)
    record = check_probe_text(config, lm, snippets, split)
    assert record["probes"]["split"] == "wikitext2:valid" and record["probes"]["shared_with_statistics"] == 0
    assert record["statistics"]["split"] == "wikitext2:test"


def test_null_probes_keep_the_legacy_split_and_record_the_overlap(data_dir, tiny_run_config, tmp_path) -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64)
    config = _config(tiny_run_config, tmp_path, None)
    snippets, description, split = probe_snippets(config)
    assert split == PROBE_SPLIT and description == "4 wikitext2-test snippets"  # what earlier runs probed
    record = check_probe_text(config, lm, snippets, split)
    assert record["probes"]["shared_with_statistics"] == 4 and record["probes"]["explicit"] is False


def test_bare_name_is_not_a_probe_split(tiny_run_config, tmp_path) -> None:
    config = tiny_run_config(tmp_path, text={"probes": "wikitext2"})
    with pytest.raises(ConfigError, match=r"text\.probes.*name the split"):
        probe_snippets(config)


def _last_probe_record(run_dir: Path) -> dict:
    import json

    manifest = json.loads(sorted((run_dir / "state").glob("monitor_step_*.json"))[-1].read_text())
    return manifest["meta"]["text"]["probes"]


def _forget_text_field(run_dir: Path) -> None:
    """Make the run look started by a seqedit without ``text``: neither config.yaml nor editor.json has it."""
    import json

    import yaml

    path = run_dir / "config.yaml"
    stored = yaml.safe_load(path.read_text())
    assert stored.pop("text") == {"probes": None}
    path.write_text(yaml.safe_dump(stored))
    editor = json.loads((run_dir / "editor.json").read_text())
    del editor["config"]["text"]
    (run_dir / "editor.json").write_text(json.dumps(editor))


def test_run_records_its_splits_and_an_older_run_resumes_with_its_probes(data_dir, tiny_run_config, tmp_path) -> None:
    import yaml

    from seqedit.runner.run import resume_experiment, run_experiment

    def tiny():
        return build_tiny_model("llama", num_layers=4, hidden=48, seed=3)

    # statistics on the builtin text (stable edits on a tiny model); default probes
    fresh = run_experiment(tiny_run_config(tmp_path, "fresh"), lm=tiny(), show_progress=False, max_steps=1)
    assert _last_probe_record(fresh.run_dir) == {"split": "wikitext2:valid", "snippets": 4, "explicit": True,
                                                 "shared_with_statistics": 0}

    config = tiny_run_config(tmp_path, "old", text={"probes": None})  # the probes runs had before the field
    first = run_experiment(config, lm=tiny(), show_progress=False, max_steps=1)
    assert first.status == "running"
    assert _last_probe_record(config.output_dir)["split"] == "wikitext2:test"
    _forget_text_field(config.output_dir)
    # The config in force lacks the field too: today's default (valid) would change the probes mid-run.
    resumed = resume_experiment(config.output_dir, lm=tiny(), show_progress=False)
    assert resumed.status == "finished", resumed.message
    probes = _last_probe_record(config.output_dir)
    assert probes["split"] == "wikitext2:test" and probes["explicit"] is False
    assert yaml.safe_load((config.output_dir / "config.yaml").read_text())["text"] == {"probes": None}


def test_an_older_run_refuses_other_explicit_probes(data_dir, tiny_run_config, tmp_path) -> None:
    from seqedit.runner.run import resume_experiment, run_experiment

    config = tiny_run_config(tmp_path, "old", text={"probes": None})
    tiny = build_tiny_model("llama", num_layers=4, hidden=48, seed=3)
    run_experiment(config, lm=tiny, show_progress=False, max_steps=1)
    _forget_text_field(config.output_dir)
    with pytest.raises(ConfigError, match=r"different experiment \(text\.probes: null -> \"wikitext2:valid\"\)"):
        resume_experiment(config.output_dir, overrides=["text.probes=wikitext2:valid"], lm=tiny, show_progress=False)
