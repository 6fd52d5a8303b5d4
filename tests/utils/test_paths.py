"""Names used as path components never leave their parent folder (a model called '..' once wrote its
statistics and MEND networks one level above the cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqedit.editors import covariance
from seqedit.editors.mend.hypernet import default_checkpoint_dir
from seqedit.utils.paths import MAX_COMPONENT_CHARS, safe_path_component

HOSTILE = ["..", ".", "../..", "../escape", "a/../../b", "/etc/passwd", "..\\..\\windows", "", "~", "x" * 5000,
           "name\x00with nul", ". .", "-/-"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_inside_the_parent(name: str, tmp_path: Path) -> None:
    component = safe_path_component(name)
    assert component not in {"", ".", ".."} and "/" not in component and "\\" not in component
    assert len(component) <= MAX_COMPONENT_CHARS
    assert (tmp_path / component).resolve().parent == tmp_path.resolve()


def test_ordinary_names_keep_their_cache_folders() -> None:
    assert safe_path_component("smollm2-135m") == "smollm2-135m"
    assert safe_path_component("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB_SmolLM2-135M"
    assert safe_path_component("/models/llama-3.2-1b") == "models_llama-3.2-1b"
    # Long names stay distinct.
    assert safe_path_component("a" * 300 + "1") != safe_path_component("a" * 300 + "2")


@pytest.mark.parametrize("name", ["..", "../..", "../../etc"])
def test_statistics_and_mend_folders_stay_in_the_cache(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEQEDIT_CACHE_DIR", str(tmp_path / "cache"))
    mend = default_checkpoint_dir(name).resolve()
    assert mend.parent == (tmp_path / "cache" / "mend").resolve()
    stats = (tmp_path / "stats" / covariance._safe_model_name(name)).resolve()
    assert stats.parent == (tmp_path / "stats").resolve()
