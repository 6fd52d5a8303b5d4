"""Interventions on tiny models: the run directory has the documented files and columns, the loss goes
down, LoRA's tracked weights are the merged ones, and the model is plain afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from seqedit.intervene import InterventionConfig, group_growth, run_intervention
from seqedit.intervene.data import TaskExamples, TextChunks, load_dataset
from seqedit.models.tiny import build_tiny_model
from seqedit.runner.store import RunDirectoryError

FIXTURE_DATA_DIR = Path(__file__).parents[1] / "fixtures" / "evaluate"  # downstream/*.json, text/*.txt
NORM_COLUMNS = ["step", "n_edits", "matrix", "layer", "kind", "edited", "fro", "fro0", "fro_rel",
                "dist_from_init", "step_delta_fro", "spectral"]
CHECKPOINT_COLUMNS = ["step", "n_edits", "group", "name", "value", "scope", "layer", "definition"]




@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat and the dog sat on the log. " * 40)
    return path


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "sst2.json"
    sentences = ["a great film", "a dull mess", "lovely and warm", "boring and slow", "a joy", "a bore"]
    path.write_text(json.dumps([{"sentence": s, "label": (i + 1) % 2, "idx": i} for i, s in enumerate(sentences * 3)]))
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_directory_has_the_documented_files_and_the_loss_decreases(tmp_path: Path, corpus: Path) -> None:
    lm = build_tiny_model("llama", num_layers=2, hidden=32, seed=0)
    out = tmp_path / "run"
    cfg = InterventionConfig(kind="continued-pretraining", data=str(corpus), steps=12, lr=3e-3, batch_size=4,
                             seq_len=16, record_every=4, output_dir=out)
    summary = run_intervention(cfg, lm, progress=False)
    for name in ("config.yaml", "environment.json", "progress.json", "norms.jsonl", "norms.parquet",
                 "checkpoints.jsonl", "checkpoints.parquet", "timings.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    progress = json.loads((out / "progress.json").read_text())
    assert progress == {"kind": "intervention", "status": "finished", "completed_steps": 12, "n_edits": 0,
                        "message": progress["message"], "schema_version": 2}
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["kind"] == "continued-pretraining" and config["lr"] == 3e-3 and config["steps"] == 12
    norms = _read_jsonl(out / "norms.jsonl")
    n_matrices = len(lm.adapter.matrices("all"))
    assert list(norms[0]) == NORM_COLUMNS
    assert sorted({r["step"] for r in norms}) == [0, 4, 8, 12]
    assert len(norms) == 4 * n_matrices
    assert list(pd.read_parquet(out / "norms.parquet").columns) == NORM_COLUMNS
    step0 = [r for r in norms if r["step"] == 0]
    assert all(r["fro_rel"] == 1.0 and r["dist_from_init"] == 0.0 and r["n_edits"] == 0 for r in step0)
    assert all(r["edited"] and r["spectral"] is None for r in step0)  # every matrix is trained; no --spectral
    first = [r for r in norms if r["step"] == 4]  # measured against step 0: the step delta is the distance
    assert all(r["step_delta_fro"] == pytest.approx(r["dist_from_init"], rel=1e-12) for r in first)
    last = [r for r in norms if r["step"] == 12]
    assert all(r["edited"] for r in last) and all(r["dist_from_init"] > 0 for r in last)
    assert all(0 < r["step_delta_fro"] < r["dist_from_init"] + 1e-12 for r in last)
    weight = lm.adapter.weight(last[0]["matrix"]).double()
    assert last[0]["fro"] == pytest.approx(float(weight.norm()), rel=1e-9)
    checkpoints = _read_jsonl(out / "checkpoints.jsonl")
    assert all(list(r) == CHECKPOINT_COLUMNS and r["group"] == "train" for r in checkpoints)
    train_loss = [r["value"] for r in checkpoints if r["name"] == "loss"]
    eval_loss = {r["step"]: r["value"] for r in checkpoints if r["name"] == "eval_loss"}
    assert len(train_loss) == 12 and sorted(eval_loss) == [0, 4, 8, 12]
    assert eval_loss[12] < eval_loss[0] - 0.5  # a repetitive text is learned quickly
    assert sum(train_loss[-3:]) < sum(train_loss[:3])
    timings = _read_jsonl(out / "timings.jsonl")
    assert [r["step"] for r in timings] == list(range(1, 13)) and "phase_train_s" in timings[0]
    assert {g["kind"] for g in summary["growth"]} == {"mlp.out_proj", "mlp.in_proj", "attn.out_proj", "attn.in_proj"}
    assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())
    with pytest.raises(RunDirectoryError, match="already holds a run; choose another output_dir"):
        run_intervention(cfg, lm, progress=False)  # never appends to an earlier run's tables


def test_lora_tracks_merged_weights_and_leaves_a_plain_model(tmp_path: Path, task_file: Path) -> None:
    lm = build_tiny_model("llama", num_layers=2, hidden=32, seed=1)
    modules_before = dict(lm.model.named_modules())
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    cfg = InterventionConfig(kind="lora", data=str(task_file), steps=6, lr=1e-2, batch_size=3, seq_len=32,
                             record_every=3, lora_kinds=["mlp.out_proj"], lora_layers=[1], spectral=True,
                             output_dir=tmp_path / "r")
    run_intervention(cfg, lm, progress=False)
    assert dict(lm.model.named_modules()).keys() == modules_before.keys()
    assert not any("lora" in type(m).__name__.lower() for m in lm.model.modules())
    norms = _read_jsonl(tmp_path / "r" / "norms.jsonl")
    final = {r["matrix"]: r for r in norms if r["step"] == 6}
    target = lm.adapter.mlp_out_proj(1)
    assert final[target]["edited"] and final[target]["dist_from_init"] > 0
    # The adapters were merged at the end: the last recorded (merged) norm is the model's weight norm.
    merged = lm.adapter.weight(target).double()
    assert final[target]["fro"] == pytest.approx(float(merged.norm()), rel=1e-6)
    assert final[target]["spectral"] == pytest.approx(float(torch.linalg.matrix_norm(merged, ord=2)), rel=1e-4)
    for path, row in final.items():
        if path != target:
            assert not row["edited"] and row["dist_from_init"] == 0.0 and row["fro_rel"] == 1.0
            assert torch.equal(lm.adapter.weight(path), before[f"{path}.weight"])


def test_finetune_on_a_task_trains_only_answers(tmp_path: Path, task_file: Path) -> None:
    lm = build_tiny_model("gpt2", num_layers=2, hidden=32, seed=2)
    dataset, description = load_dataset(lm.tokenizer, str(task_file), 64)
    assert isinstance(dataset, TaskExamples) and description.startswith("task:")
    assert dataset.pairs[0] == ("Review: a great film\nSentiment:", "positive")
    short, _ = load_dataset(lm.tokenizer, str(task_file), 24)  # the text is cut, the template and answer stay
    assert isinstance(short, TaskExamples)
    assert short.pairs[0][0].startswith("Review: a") and short.pairs[0][0].endswith("\nSentiment:")
    assert len(short.pairs[0][0]) < len(dataset.pairs[0][0])
    batch = dataset.batch([0, 1])
    assert int(batch.target_mask.sum()) == len(" positive") + len(" negative")  # byte tokens of the answers
    cfg = InterventionConfig(kind="finetune", data=str(task_file), steps=4, lr=1e-3, batch_size=3, seq_len=32,
                             record_every=2, output_dir=tmp_path / "f")
    summary = run_intervention(cfg, lm, progress=False)
    assert summary["steps"] == 4 and summary["trained_matrices"] == len(lm.adapter.matrices("all"))


def test_named_data_comes_through_the_data_layer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lm = build_tiny_model("gpt2", num_layers=1, hidden=32)
    monkeypatch.setenv("SEQEDIT_DATA_DIR", str(FIXTURE_DATA_DIR))
    text, description = load_dataset(lm.tokenizer, "wikitext2", 16)
    assert isinstance(text, TextChunks) and description == "text:wikitext2 (wikitext2:valid)"  # the split, recorded
    decoded = lm.tokenizer.decode(text.chunks.flatten().tolist())
    assert decoded.startswith("The example article is") and "= =" not in decoded  # paragraphs, no headings
    rte, _ = load_dataset(lm.tokenizer, "rte", 256)
    source = FIXTURE_DATA_DIR / "downstream" / "rte.json"
    labels = [r["label"] for r in json.loads(source.read_text())]
    assert [answer for _, answer in rte.pairs] == ["yes" if y == 0 else "no" for y in labels]  # 0 = entailment
    monkeypatch.setenv("SEQEDIT_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"downstream/sst2\.json"):
        load_dataset(lm.tokenizer, "sst2", 64)


def test_group_growth_table() -> None:
    rows = [
        {"step": 0, "kind": "a", "fro": 3.0, "fro_rel": 1.0, "dist_from_init": 0.0},
        {"step": 0, "kind": "a", "fro": 4.0, "fro_rel": 1.0, "dist_from_init": 0.0},
        {"step": 5, "kind": "a", "fro": 6.0, "fro_rel": 2.0, "dist_from_init": 3.0},
        {"step": 5, "kind": "a", "fro": 8.0, "fro_rel": 2.0, "dist_from_init": 4.0},
    ]
    (row,) = group_growth(rows)
    assert row["fro_start"] == 5.0 and row["fro_end"] == 10.0 and row["growth"] == 1.0
    assert row["dist_from_init"] == 5.0 and row["matrices"] == 2


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="kind"):
        InterventionConfig(kind="pretrain")  # type: ignore[arg-type]
    lm = build_tiny_model("llama", num_layers=1, hidden=32)
    with pytest.raises(ValueError, match="unknown data"):
        load_dataset(lm.tokenizer, "imagenet", 16)


@pytest.mark.integration
def test_continued_pretraining_of_the_embedded_model_records_every_matrix(embedded_model, tmp_path: Path) -> None:
    import copy

    lm = copy.copy(embedded_model)
    lm.model = copy.deepcopy(embedded_model.model)  # training changes every weight; keep the session's model
    lm.adapter = type(embedded_model.adapter)(lm.model)
    corpus = tmp_path / "text.txt"
    corpus.write_text("The European lobster is a species of clawed lobster from the eastern Atlantic Ocean. " * 30)
    cfg = InterventionConfig(kind="continued-pretraining", data=str(corpus), steps=2, lr=1e-4, batch_size=2,
                             seq_len=32, record_every=2, eval_batches=1, output_dir=tmp_path / "run")
    summary = run_intervention(cfg, lm, progress=False)
    norms = _read_jsonl(tmp_path / "run" / "norms.jsonl")
    assert len(norms) == 2 * 30 * 7  # steps 0 and 2, 30 layers x 7 matrices
    assert all(r["dist_from_init"] > 0 for r in norms if r["step"] == 2)
    assert summary["eval_loss_end"] < summary["eval_loss_start"]


def test_cli_runs_an_intervention_on_a_local_model(tmp_path: Path, corpus: Path) -> None:
    from typer.testing import CliRunner

    from seqedit.cli.intervene import app

    lm = build_tiny_model("llama", num_layers=1, hidden=32, seed=3)
    model_dir = tmp_path / "tiny"
    lm.model.save_pretrained(model_dir, safe_serialization=True)
    lm.tokenizer.save_pretrained(model_dir)
    settings = tmp_path / "settings.yaml"
    settings.write_text("steps: 3\nseq_len: 16\nrecord_every: 3\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["--kind", "lora", "--model", str(model_dir), "--data", str(corpus), "--config",
                                      str(settings), "--steps", "2", "--lr", "0.01", "--output", str(out),
                                      "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "mlp.out_proj" in result.output and "growth" in result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["steps"] == 2 and config["seq_len"] == 16 and config["kind"] == "lora"  # options beat the file
    bad = CliRunner().invoke(app, ["--kind", "pretrain", "--model", str(model_dir), "--output", str(out)])
    assert bad.exit_code != 0
