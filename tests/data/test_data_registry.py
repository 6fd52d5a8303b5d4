"""Registered names, lookup in the data directory, describe_datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from seqedit.data import (
    DATASETS,
    UnknownDatasetError,
    describe_datasets,
    load_downstream,
    load_edit_requests,
    load_known_facts,
    load_text,
)
from seqedit.data.downstream import CLASSIFICATION_TASKS, MULTIPLE_CHOICE_TASKS
from seqedit.data.registry import dataset_names

EXPECTED_NAMES = {
    "counterfact", "counterfact-train", "zsre", "known-facts", "wikitext2-valid", "wikitext2-test",
    "sst2", "mrpc", "cola", "rte", "nli", "mmlu", "builtin", "builtin-prose",
}  # fmt: skip


@pytest.fixture
def data_dir(tmp_path: Path, fixtures: Path) -> Path:
    """A data directory laid out like the shared one, filled with the fixtures."""
    layout = {
        "counterfact/counterfact-edit.json": "counterfact_easyedit.json",
        "counterfact/counterfact-train.json": "counterfact_rome.json",
        "zsre/zsre-1k.json": "zsre_mend.json",
        "known_facts/known_1000.json": "known_facts.json",
        "text/wikitext2-valid.txt": "wikitext.txt",
        **{
            f"downstream/{task}.json": f"{task}.json"
            for task in ("sst2", "mrpc", "cola", "rte", "nli", "mmlu")
        },
    }
    for relative, fixture in layout.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures / fixture, tmp_path / relative)
    return tmp_path


def test_registry_names_and_metadata() -> None:
    assert set(DATASETS) == EXPECTED_NAMES
    assert set(dataset_names("downstream")) == set(CLASSIFICATION_TASKS) | set(MULTIPLE_CHOICE_TASKS)
    for spec in DATASETS.values():
        assert spec.description and spec.citation and spec.licence
        assert spec.bundled or (spec.paths and spec.url and spec.url.startswith("https://"))
    assert DATASETS["counterfact"].url == "https://rome.baulab.info/data/dsets/counterfact.json"
    assert DATASETS["known-facts"].url == "https://rome.baulab.info/data/dsets/known_1000.json"


def test_load_by_name_from_the_data_dir(data_dir: Path, no_data_dir: None) -> None:
    counterfact = load_edit_requests("counterfact", data_dir=data_dir)
    assert len(counterfact) == 3 and counterfact[0].source == "counterfact"
    train = load_edit_requests("counterfact-train", data_dir=data_dir, offset=1, limit=1)
    assert [r.case_id for r in train] == ["1"] and train[0].source == "counterfact-train"
    assert load_edit_requests("zsre", data_dir=data_dir)[0].target_new == "Chile"
    assert len(load_known_facts(data_dir=data_dir)) == 2
    assert load_downstream("sst2", data_dir=data_dir)[0].label_names == ("negative", "positive")
    assert load_downstream("mmlu", data_dir=data_dir)[1].answer == 2
    assert load_text("wikitext2-valid", data_dir=data_dir, limit=1) == [
        "The first paragraph mentions a <unk> word ."
    ]


def test_data_dir_comes_from_the_setting(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQEDIT_DATA_DIR", str(data_dir))
    assert len(load_edit_requests("zsre")) == 3


def test_load_by_path(data_dir: Path, fixtures: Path, no_data_dir: None) -> None:
    assert len(load_edit_requests(fixtures / "counterfact_rome.json")) == 3
    assert len(load_edit_requests(str(fixtures / "zsre_mend.json"))) == 3  # MEND layout detected
    # Relative paths are also looked up under the data directory.
    assert len(load_edit_requests("counterfact/counterfact-edit.json", data_dir=data_dir)) == 3


def test_unknown_and_mismatched_names(data_dir: Path) -> None:
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset 'counterfakt'; known names: counterfact"):
        load_edit_requests("counterfakt", data_dir=data_dir)
    with pytest.raises(ValueError, match=r"'sst2' holds downstream, not edits"):
        load_edit_requests("sst2", data_dir=data_dir)


def test_builtin_needs_no_data_dir(no_data_dir: None) -> None:
    report = load_edit_requests("builtin", limit=5)
    assert len(report) == 5 and all(r.source == "builtin" for r in report)


def test_describe_datasets(data_dir: Path, no_data_dir: None) -> None:
    infos = {info.name: info for info in describe_datasets(data_dir)}
    assert set(infos) == EXPECTED_NAMES
    assert infos["zsre"].found and infos["zsre"].records == 3
    assert infos["zsre"].path == data_dir / "zsre" / "zsre-1k.json"
    assert infos["wikitext2-valid"].records == 3  # paragraphs
    missing = infos["wikitext2-test"]
    assert not missing.found and missing.records is None
    assert missing.path == data_dir / "text" / "wikitext2-test.txt" and missing.url
    assert infos["builtin"].found and (infos["builtin"].records or 0) >= 120


def test_describe_reports_unreadable_files(data_dir: Path) -> None:
    (data_dir / "downstream" / "rte.json").write_text("[{", encoding="utf-8")
    rte = next(info for info in describe_datasets(data_dir) if info.name == "rte")
    assert rte.found and rte.records is None and rte.error and "JSONDecodeError" in rte.error


def test_describe_without_data_dir(no_data_dir: None) -> None:
    infos = {info.name: info for info in describe_datasets()}
    assert not infos["counterfact"].found and infos["counterfact"].path is None
    assert infos["builtin"].found
