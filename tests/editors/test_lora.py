"""LoRA editing on tiny random models: the merged delta is B·A·alpha/r, the model is plain afterwards,
the edit works and is exactly undoable."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_close_rel

from seqedit.data.records import EditRequest
from seqedit.editors import create_editor
from seqedit.editors.edit_loss import request_batch, target_probabilities
from seqedit.editors.lora import ADAPTER_NAME, LoRAConfig, LoRAEditor, _InjectedLoRA
from seqedit.models.tiny import build_tiny_model


def _request() -> EditRequest:
    return EditRequest(case_id="7", subject="Zorblat", prompt="The capital of {} is", target_new="Paris")


def _modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return dict(model.named_modules())


def test_merged_delta_is_b_a_times_alpha_over_rank() -> None:
    lm = build_tiny_model("llama", num_layers=3, hidden=48, seed=3)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    cfg = LoRAConfig(layers=[1, 2], rank=4, alpha=12.0, lr=1e-2, steps=5, stop_loss=0.0)
    editor = LoRAEditor(cfg)
    result = editor.apply(lm, [_request()])
    assert set(editor.last_factors) == {"model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"}
    for path, factors in editor.last_factors.items():
        expected = factors.b @ factors.a * (12.0 / 4)
        name = f"{path}.weight"
        assert_close_rel(result.deltas[name], expected, rel=1e-6)
        assert torch.linalg.matrix_rank(result.deltas[name]) <= 4
        assert float(result.deltas[name].abs().max()) > 0  # B was trained away from zero
        assert torch.equal(lm.model.get_parameter(name), before[name] + result.deltas[name])
    unchanged = set(before) - set(result.deltas)
    assert all(torch.equal(lm.model.get_parameter(n), before[n]) for n in unchanged)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_our_delta_matches_peft_merge(family: str) -> None:
    lm = build_tiny_model(family, num_layers=2, hidden=32, seed=4)
    path = lm.adapter.mlp_out_proj(1)
    injected = _InjectedLoRA(lm, [path], LoRAConfig(rank=3, alpha=6.0))
    try:
        _a, b = injected.factor_params(path)
        with torch.no_grad():
            b.normal_()  # B starts at zero; give it values so the comparison means something
        ours = injected.canonical_delta(path).detach()
        peft_native = injected.layers[path].get_delta_weight(ADAPTER_NAME).detach()  # type: ignore[operator]
    finally:
        injected.unload()
    assert_close_rel(ours, lm.adapter.from_native(path, peft_native), rel=1e-6)


def test_model_is_plain_after_editing_and_undo_is_exact() -> None:
    lm = build_tiny_model("llama", num_layers=2, hidden=32, seed=5)
    modules_before = _modules(lm.model)
    params_before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    request = _request()
    batch = request_batch(lm, [request])
    (p_before,) = target_probabilities(lm, batch)
    result = create_editor("lora", lm, {"lr": 2e-2, "steps": 12}).apply(lm, [request])
    (p_after,) = target_probabilities(lm, batch)
    assert p_after > 20 * p_before
    modules_after = _modules(lm.model)
    assert modules_after.keys() == modules_before.keys()
    assert all(modules_after[k] is modules_before[k] for k in modules_before)  # the same objects are back
    assert not hasattr(lm.model, "peft_config")
    assert not any("lora" in type(m).__name__.lower() for m in lm.model.modules())
    assert not any(p.requires_grad for p in lm.model.parameters()) and not lm.model.training
    result.undo(lm.model)
    assert all(torch.equal(lm.model.get_parameter(n), v) for n, v in params_before.items())


def test_frobenius_cap_is_respected() -> None:
    lm = build_tiny_model("llama", num_layers=2, hidden=32, seed=6)
    cfg = LoRAConfig(layers=[0, 1], lr=2e-2, steps=8, stop_loss=0.0, max_delta_fro=0.05)
    result = LoRAEditor(cfg).apply(lm, [_request()])
    norms = result.delta_norms()
    assert max(norms.values()) <= 0.05 * (1 + 1e-4)
    assert max(norms.values()) > 0.04  # the cap was active, not merely unreached


@pytest.mark.integration
def test_lora_defaults_edit_a_fact_of_the_embedded_model(embedded_model) -> None:
    from seqedit.models.tokens import encode_prompt_targets, target_log_probs

    request = EditRequest(case_id="0", subject="Danielle Darrieux", prompt="The mother tongue of {} is",
                          target_new="English", target_true="French")
    batch = encode_prompt_targets(embedded_model.tokenizer, [request.full_prompt] * 2, ["English", "French"])

    def margin() -> float:
        with torch.no_grad():
            logits = embedded_model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        mean = target_log_probs(logits, batch)[1]
        return float(mean[0] - mean[1])

    assert margin() < 0
    result = create_editor("lora", embedded_model).apply(embedded_model, [request])
    try:
        assert margin() > 0
        assert not any("lora" in type(m).__name__.lower() for m in embedded_model.model.modules())
    finally:
        result.undo(embedded_model.model)
    assert margin() < 0
