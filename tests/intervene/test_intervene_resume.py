"""An interrupted intervention resumes exactly: stopped after a saved state (and a few steps past it), then
continued on a freshly loaded model, it writes the same rows and ends with the same weights as a run that
never stopped, for full training and for LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqedit.intervene import InterventionConfig, run_intervention
from seqedit.models.tiny import build_tiny_model
from seqedit.runner.store import RunDirectoryError


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat and the dog sat on the log. a bird flew over the barn. " * 30)
    return path


def _rows(run_dir: Path, table: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / f"{table}.jsonl").read_text().splitlines()]


def _config(kind: str, corpus: Path, out: Path, **fields) -> InterventionConfig:
    extra = {"lora_kinds": ["mlp.out_proj", "attn.in_proj"], "lr": 1e-2} if kind == "lora" else {"lr": 3e-3}
    base = dict(kind=kind, data=str(corpus), steps=12, batch_size=3, seq_len=16, record_every=2, save_every=4,
                weight_decay=0.01, spectral=True, output_dir=out)
    return InterventionConfig(**{**base, **extra, **fields})


@pytest.mark.parametrize("kind", ["continued-pretraining", "lora"])
def test_a_stopped_run_resumes_to_the_same_rows_and_weights(kind: str, corpus: Path, tmp_path: Path) -> None:
    def tiny():
        return build_tiny_model("llama", num_layers=2, hidden=32, seed=4)

    straight = tiny()
    whole = run_intervention(_config(kind, corpus, tmp_path / "whole"), straight, progress=False)

    stopped = _config(kind, corpus, tmp_path / "stopped")
    partial = run_intervention(stopped, tiny(), progress=False, max_steps=7)
    assert partial == {"status": "running", "completed_steps": 7, "steps": 12}
    states = sorted(p.name for p in (stopped.output_dir / "state").glob("*.json"))
    assert states == ["training_step_000004.json"]  # saved at step 4; steps 5-7 were recorded after it
    assert max(r["step"] for r in _rows(stopped.output_dir, "norms")) == 6

    resumed_model = tiny()
    resumed = run_intervention(stopped, resumed_model, progress=False, resume=True)
    for table in ("norms", "checkpoints"):
        assert _rows(stopped.output_dir, table) == _rows(tmp_path / "whole", table), table
    assert [r["step"] for r in _rows(stopped.output_dir, "timings")] == list(range(1, 13))
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed_model.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    for key in ("train_loss_first", "train_loss_last", "eval_loss_start", "eval_loss_end", "growth",
                "trained_matrices"):
        assert resumed[key] == whole[key], key
    assert not (stopped.output_dir / "state").exists()  # a finished run keeps no training state
    progress = json.loads((stopped.output_dir / "progress.json").read_text())
    assert progress["status"] == "finished" and progress["completed_steps"] == 12
    assert run_intervention(stopped, tiny(), progress=False, resume=True) == resumed  # finished: nothing to do


def test_a_run_stopped_before_its_first_save_starts_again(corpus: Path, tmp_path: Path) -> None:
    cfg = _config("continued-pretraining", corpus, tmp_path / "run", steps=6, save_every=4)
    run_intervention(cfg, build_tiny_model("llama", num_layers=2, hidden=32, seed=4), progress=False, max_steps=3)
    assert list(cfg.output_dir.glob("state/*")) == []  # the first save is due at step 4
    run_intervention(cfg, build_tiny_model("llama", num_layers=2, hidden=32, seed=4), progress=False, resume=True)
    norms = _rows(cfg.output_dir, "norms")
    assert sorted({r["step"] for r in norms}) == [0, 2, 4, 6]
    assert len(norms) == 4 * len({r["matrix"] for r in norms})  # the baseline recorded once, not twice


def test_resuming_with_another_config_is_refused(corpus: Path, tmp_path: Path) -> None:
    cfg = _config("continued-pretraining", corpus, tmp_path / "run")
    run_intervention(cfg, build_tiny_model("llama", num_layers=2, hidden=32, seed=4), progress=False, max_steps=5)
    changed = cfg.model_copy(update={"weight_decay": 0.0})
    with pytest.raises(RunDirectoryError, match=r"different run \(weight_decay: 0\.01 -> 0\.0\)"):
        run_intervention(changed, build_tiny_model("llama", num_layers=2, hidden=32, seed=4), progress=False,
                         resume=True)


def test_cli_resumes_an_intervention_with_its_recorded_settings(corpus: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from seqedit.cli.intervene import app
    from seqedit.models import load

    tiny = build_tiny_model("llama", num_layers=1, hidden=32, seed=3)
    model_dir = tmp_path / "tiny"
    tiny.model.save_pretrained(model_dir, safe_serialization=True)
    tiny.tokenizer.save_pretrained(model_dir)
    cfg = _config("lora", corpus, tmp_path / "run", model=str(model_dir), steps=6, device="cpu")
    run_intervention(cfg, load(str(model_dir), device="cpu"), progress=False, max_steps=5)
    refused = CliRunner().invoke(app, ["--resume", str(cfg.output_dir), "--steps", "8"])
    assert refused.exit_code == 2 and "give --resume alone" in refused.output
    result = CliRunner().invoke(app, ["--resume", str(cfg.output_dir), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((cfg.output_dir / "progress.json").read_text())["status"] == "finished"
    assert sorted({r["step"] for r in _rows(cfg.output_dir, "norms")}) == [0, 2, 4, 6]


def test_only_the_newest_training_state_stays_on_disk(corpus: Path, tmp_path: Path) -> None:
    cfg = _config("continued-pretraining", corpus, tmp_path / "run")
    run_intervention(cfg, build_tiny_model("llama", num_layers=2, hidden=32, seed=4), progress=False, max_steps=9)
    # saved at steps 4 and 8; step 4's blob is gone although step 8 has tensors equal to its (the baselines)
    assert sorted(p.name for p in (cfg.output_dir / "state").iterdir()) == [
        "training_step_000008.json", "training_step_000008.safetensors"]
