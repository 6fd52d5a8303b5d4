"""The demo's choices of facts and key-statistics corpus follow the data it finds, and its configs validate."""

from pathlib import Path

import pytest

from seqedit.cli.demo import FULL, QUICK, demo_config_data, demo_dataset, demo_statistics_corpus
from seqedit.runner.config import RunConfig


def _data_dir_with(tmp_path: Path, *files: str) -> Path:
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(" = Heading = \n\n Some text of an article . \n", encoding="utf-8")
    return tmp_path


def test_without_research_data_the_demo_uses_the_builtin_facts_and_prose(monkeypatch):
    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    assert demo_dataset() == "builtin"
    assert demo_statistics_corpus() == "builtin-prose"


def test_with_wikitext_the_demo_keeps_the_methods_default_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQEDIT_DATA_DIR", str(_data_dir_with(tmp_path, "text/wikitext2-test.txt")))
    assert demo_statistics_corpus() == "wikitext2"


@pytest.mark.parametrize("size", [QUICK, FULL])
def test_the_chosen_corpus_reaches_only_methods_with_key_statistics(size, tmp_path):
    prose = RunConfig.model_validate(demo_config_data("memit", size, "smollm2-135m", "builtin", tmp_path, "builtin-prose"))
    assert prose.hparams["mom2_corpus"] == "builtin-prose"
    # The method's own default is left implicit, so runs made with the research data keep their config.
    default = demo_config_data("encore", size, "smollm2-135m", "counterfact", tmp_path, "wikitext2")
    assert "mom2_corpus" not in default["hparams"]
    assert "mom2_corpus" not in demo_config_data("ft-l", size, "smollm2-135m", "builtin", tmp_path,
                                                 "builtin-prose")["hparams"]
