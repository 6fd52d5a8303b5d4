"""evaluation.lm_eval: lm-evaluation-harness tasks on the in-memory model at checkpoints, stored as
downstream rows; checked offline with a multiple-choice task over a local JSON file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from seqedit.evaluate.lm_eval import LMEvalConfig, result_rows
from seqedit.models.tiny import build_tiny_model
from seqedit.models.tokens import encode_prompt_targets, target_log_probs
from seqedit.runner.run import run_experiment
from seqedit.runner.store import RunStore

DATA = Path(__file__).parents[1] / "fixtures" / "lm_eval" / "capitals.jsonl"
needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason='needs lm-evaluation-harness (pip install "seqedit[lm-eval]")')


def _tiny():
    return build_tiny_model("llama", num_layers=4, hidden=48, seed=3)


def _local_task(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "capitals.yaml").write_text(
        "task: seqedit_capitals\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {DATA}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: choices\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 2.0\n"
    )
    return folder


def _independent_accuracy(lm) -> float:
    """Multiple choice as the harness scores it: the choice (after a space) with the highest summed log-prob."""
    docs = [json.loads(line) for line in DATA.read_text().splitlines()]
    hits = 0
    for doc in docs:
        batch = encode_prompt_targets(lm.tokenizer, [doc["question"]] * len(doc["choices"]),
                                      [" " + c for c in doc["choices"]], add_special_tokens=False)
        with torch.no_grad():
            logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        hits += int(int(target_log_probs(logits, batch)[0].argmax()) == doc["answer"])
    return hits / len(docs)


def test_result_rows_keep_metrics_with_task_version_and_drop_stderr():
    results = {
        "results": {"arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1,
                                 "acc_norm,none": 0.25, "sample_len": 4}},
        "versions": {"arc_easy": 1.0},
        "n-shot": {"arc_easy": 3},
    }
    rows = result_rows(results, LMEvalConfig(tasks=("arc_easy",), num_fewshot=3, limit=4), "0.4.13")
    assert [(r["name"], r["value"], r["scope"]) for r in rows] == [
        ("arc_easy_acc", 0.5, "arc_easy"), ("arc_easy_acc_norm", 0.25, "arc_easy")
    ]
    assert rows[0]["definition"] == "lm-eval 0.4.13: arc_easy v1.0, 3-shot, limit 4, filter none"
    assert all(r["group"] == "downstream" and r["layer"] is None for r in rows)


@needs_lm_eval
def test_a_local_task_is_measured_at_checkpoints_like_the_other_downstream_metrics(
    tmp_path, tiny_run_config, monkeypatch
):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    tasks = _local_task(tmp_path / "tasks")
    config = tiny_run_config(tmp_path, num_edits=4, evaluation={
        "batch_size": 8, "edit_metrics": False, "activations": False,
        "lm_eval": {"tasks": ["seqedit_capitals"], "num_fewshot": 0, "limit": None, "include_path": str(tasks)},
    })
    outcome = run_experiment(config, lm=_tiny(), show_progress=False)
    assert outcome.status == "finished"
    rows = [r for r in RunStore(outcome.run_dir).read("checkpoints") if r["group"] == "downstream"]
    by_edits = {r["n_edits"]: r for r in rows if r["name"] == "seqedit_capitals_acc"}
    assert sorted(by_edits) == [0, 4]
    assert by_edits[0]["scope"] == "seqedit_capitals"
    assert by_edits[0]["definition"].endswith("seqedit_capitals v2.0, 0-shot, limit None, filter none")
    assert by_edits[0]["value"] == pytest.approx(_independent_accuracy(_tiny()))
