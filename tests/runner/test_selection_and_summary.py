"""Which facts a run takes (a user's file in its own order), and what summary.json says about the run."""

from __future__ import annotations

import json
import shutil

import pytest

from seqedit.data.builtin import builtin_facts_path
from seqedit.models.tiny import build_tiny_model
from seqedit.runner.config import ConfigError
from seqedit.runner.requests import index_ranges, order_seed_of, select_requests
from seqedit.runner.run import run_experiment
from seqedit.runner.summary import _timing_summary


def _user_file(tmp_path):
    path = tmp_path / "my_facts.json"
    shutil.copy(builtin_facts_path(), path)
    return str(path)


def test_a_users_file_is_edited_in_its_own_order(tmp_path, tiny_run_config):
    config = tiny_run_config(tmp_path, dataset={"name": _user_file(tmp_path), "offset": 3})
    assert order_seed_of(config) is None
    selection = select_requests(config)
    assert [r.case_id for r in selection.edits] == [f"builtin-{i:04d}" for i in range(4, 10)]
    assert selection.indices == [3, 4, 5, 6, 7, 8] and selection.order == "file order"
    assert selection.describe()["record_indices"] == "3-8"
    shuffled = select_requests(config.model_copy(update={"order_seed": 5}))
    assert "order_seed 5" in shuffled.order and shuffled.indices != selection.indices


def test_named_datasets_keep_seed_zero_by_default(tmp_path, tiny_run_config):
    config = tiny_run_config(tmp_path)  # builtin, order_seed left at 'auto'
    assert order_seed_of(config) == 0
    assert [r.case_id for r in select_requests(config).edits] == [
        r.case_id for r in select_requests(config.model_copy(update={"order_seed": 0})).edits
    ]
    picked = select_requests(config)
    assert picked.indices != list(range(6))  # shuffled, as before 'auto' existed


def test_index_ranges_and_a_short_log_line(tmp_path, tiny_run_config):
    assert index_ranges([0, 1, 2, 7, 9, 10]) == "0-2, 7, 9-10" and index_ranges([]) == ""
    selection = select_requests(tiny_run_config(tmp_path, num_edits=200, batch_size=10))
    line = selection.log_line("builtin")
    assert len(line) < 400 and "(all in summary.json)" in line and "order_seed 0" in line


def test_summary_names_the_facts_profile_and_one_off_statistics(tmp_path, tiny_run_config):
    messages: list[str] = []
    config = tiny_run_config(tmp_path, dataset={"name": _user_file(tmp_path)}, num_edits=4)
    from seqedit.runner.run import SequentialRun

    outcome = SequentialRun(config, lm=build_tiny_model("llama", num_layers=4, hidden=48, seed=3),
                            show_progress=False, log=messages.append).execute()
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    assert summary["facts"]["case_ids"] == [f"builtin-{i:04d}" for i in range(1, 5)]
    assert summary["facts"]["order"] == "file order" and summary["facts"]["record_indices"] == "0-3"
    assert any("records 0-3" in m and "builtin-0001" in m for m in messages)
    # tiny-llama has no profile: generic defaults, said in one line.
    assert summary["profile"]["base"] == "generic"
    assert any(m.startswith("no settings profile for model 'tiny-llama'") for m in messages)
    timing = summary["timing"]
    assert timing["statistics_from_cache"] is False  # a private, empty cache
    assert timing["statistics_seconds"] > 0
    editing = timing["seconds_total"] - timing["statistics_seconds"]
    assert timing["seconds_per_edit"] == pytest.approx(editing / 4)
    assert "statistics" not in timing["seconds_per_edit_by_phase"]


def test_timing_summary_separates_the_one_off_phase():
    rows = [
        {"edits_in_step": 2, "total_s": 12.0, "phase_statistics_s": 8.0, "phase_targets_s": 3.0,
         "statistics_from_cache": True},
        {"edits_in_step": 2, "total_s": 4.0, "phase_statistics_s": 0.0, "phase_targets_s": 3.5,
         "statistics_from_cache": True},
    ]
    timing = _timing_summary(rows)
    assert timing["seconds_per_edit"] == pytest.approx((16.0 - 8.0) / 4)
    assert timing["statistics_seconds"] == 8.0 and timing["statistics_from_cache"] is True
    assert _timing_summary([{"edits_in_step": 1, "total_s": 2.0, "phase_optimise_s": 1.5}])["statistics_seconds"] is None


def test_unknown_profile_is_rejected_before_any_work(tmp_path, tiny_run_config):
    config = tiny_run_config(tmp_path, profile="nope")
    with pytest.raises(ConfigError, match="field 'profile'"):
        run_experiment(config, show_progress=False)
    assert not config.output_dir.exists()
