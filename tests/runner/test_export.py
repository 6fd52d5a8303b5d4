"""``seqedit export`` / ``seqedit apply``: an edited model saved as a Hugging Face directory reloads with the
edits in it, and every matrix no edit touched is bit-identical to the base model's."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from seqedit.cli.main import app
from seqedit.data import load_edit_requests
from seqedit.editors.registry import create_editor
from seqedit.models import load
from seqedit.models.tiny import build_tiny_model
from seqedit.models.tokens import encode_prompt_targets
from seqedit.runner.export import EXPORT_INFO, apply_to_model, cumulative_deltas, export_run
from seqedit.runner.run import run_experiment
from seqedit.runner.store import RunStore

TINY_MEMIT = {"layers": [1, 2], "v_num_grad_steps": 4, "mom2_corpus": "builtin", "mom2_n_samples": 20,
              "mom2_max_length": 64, "context_count": 1}


def _tiny():
    return build_tiny_model("llama", num_layers=4, hidden=48, seed=3)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters(remove_duplicate=False)}


def _logits(model, tokenizer, requests):
    batch = encode_prompt_targets(tokenizer, [r.full_prompt for r in requests], [r.target_new for r in requests])
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def test_exported_run_reloads_with_the_edits_and_untouched_weights_bit_identical(tmp_path, tiny_run_config):
    edited = _tiny()
    outcome = run_experiment(tiny_run_config(tmp_path), lm=edited, show_progress=False)
    assert outcome.status == "finished" and outcome.completed_steps == 3
    base = _params(_tiny().model)

    out = export_run(outcome.run_dir, tmp_path / "export", base=_tiny())
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert {p.name for p in out.glob("*.safetensors")} and (out / "config.json").exists()

    in_memory = _params(edited.model)
    changed = {n for n in base if not torch.equal(base[n], in_memory[n])}
    assert changed and all("down_proj" in n for n in changed)
    for name, weight in _params(reloaded).items():
        if name in changed:  # summed deltas vs. step-by-step additions: equal up to float32 rounding
            scale = float(in_memory[name].norm())
            assert float((weight - in_memory[name]).norm()) <= 1e-6 * scale, name
            assert float((weight - base[name]).norm()) > 1e-3 * scale, name
        else:
            assert torch.equal(weight, base[name]), name

    requests = list(load_edit_requests("builtin", limit=6))
    after = _logits(reloaded, tokenizer, requests)
    in_run = _logits(edited.model, edited.tokenizer, requests)
    moved = float((in_run - _logits(_tiny().model, tokenizer, requests)).abs().max())
    # the tiny random model's edits move its logits only a little; the reloaded model reproduces that move
    assert moved > 1e-4 and float((after - in_run).abs().max()) < 0.01 * moved
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["step"] == 3 and sorted(info["changed_parameters"]) == sorted(changed)


def test_export_at_an_earlier_step_and_bad_steps(tmp_path, tiny_run_config):
    outcome = run_experiment(tiny_run_config(tmp_path), lm=_tiny(), show_progress=False)
    first_step = RunStore(outcome.run_dir).load_ledger(1).deltas
    deltas, step = cumulative_deltas(outcome.run_dir, 1)
    assert step == 1 and deltas.keys() == first_step.keys()
    assert all(torch.equal(deltas[n], first_step[n]) for n in deltas)
    assert cumulative_deltas(outcome.run_dir, 0) == ({}, 0)
    out = export_run(outcome.run_dir, tmp_path / "step1", step=1, base=_tiny())
    reloaded = _params(AutoModelForCausalLM.from_pretrained(out))
    base = _params(_tiny().model)
    for name, delta in first_step.items():
        torch.testing.assert_close(reloaded[name], base[name] + delta, atol=0, rtol=0)
    result = CliRunner().invoke(app, ["export", str(outcome.run_dir), str(tmp_path / "x"), "--step", "9"])
    assert result.exit_code == 2 and "step 9" in result.output
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nothing"), str(tmp_path / "y")])
    assert result.exit_code == 2 and "error" in result.output


def test_apply_an_edit_result_file_to_a_base_model_directory(tmp_path):
    base_dir = tmp_path / "base"
    _tiny().model.save_pretrained(base_dir)
    _tiny().tokenizer.save_pretrained(base_dir)
    lm = load(str(base_dir))
    editor = create_editor("memit", lm, dict(TINY_MEMIT))
    requests = list(load_edit_requests("builtin", limit=2))
    result = editor.apply(lm, requests)
    result.save(tmp_path / "edit.safetensors")

    result_cli = CliRunner().invoke(
        app, ["apply", str(tmp_path / "edit.safetensors"), str(base_dir), str(tmp_path / "out")]
    )
    assert result_cli.exit_code == 0, result_cli.output
    reloaded = _params(AutoModelForCausalLM.from_pretrained(tmp_path / "out"))
    edited = _params(lm.model)
    base = _params(load(str(base_dir)).model)
    for name in base:
        if name in result.deltas:
            assert torch.equal(reloaded[name], edited[name]), name  # one delta, added once: exact
        else:
            assert torch.equal(reloaded[name], base[name]), name
    with pytest.raises(ValueError, match="does not have"):
        apply_to_model(tmp_path / "edit.safetensors", build_tiny_model("gpt2", num_layers=2, hidden=32),
                       tmp_path / "bad")
