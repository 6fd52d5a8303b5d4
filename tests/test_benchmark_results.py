"""Every committed benchmark result says where it came from (benchmarks/provenance.py's keys)."""

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
REQUIRED_KEYS = ("command", "arguments", "commit", "machine", "date")  # benchmarks/provenance.py
RESULT_FILES = sorted(RESULTS.glob("*.json"))


def test_there_are_results_to_check():
    assert len(RESULT_FILES) >= 10


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_result_records_its_provenance(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: a result is an object with provenance keys, not a bare list"
    missing = [key for key in REQUIRED_KEYS if key not in data]
    assert not missing, f"{path.name} lacks {missing}"
    assert isinstance(data["machine"], dict | str), f"{path.name}: machine is a description"
    unknown = [key for key in REQUIRED_KEYS if data[key] is None]
    # A value not recorded when the benchmark ran is null, and the file says so.
    assert not unknown or "provenance_note" in data, f"{path.name}: {unknown} are null without a note"
