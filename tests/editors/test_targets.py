"""Target optimisation: the upper-layer shortcut, MPES, and batched versus one-at-a-time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from tolerances import assert_close_rel

from seqedit.data.records import EditRequest
from seqedit.editors.context import fixed_context_templates
from seqedit.editors.keys import pad_rows
from seqedit.editors.locate import LocateEditConfig
from seqedit.editors.replay import UpperStack, lm_logits
from seqedit.editors.targets import TargetSettings, optimise_targets
from seqedit.models import hooks
from seqedit.models.tiny import TINY_FAMILIES, build_tiny_model


def target_settings(**changes: Any) -> TargetSettings:
    """The defaults of a locate-and-edit config, with ``changes`` (TargetSettings' names)."""
    return replace(TargetSettings.from_config(LocateEditConfig()), **changes)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_upper_stack_matches_full_forward_with_delta_hook(family):
    lm = build_tiny_model(family, num_layers=4)
    texts = ["The capital of France is", "Hello there, world", "abc"]
    ids, mask = pad_rows([lm.tokenizer(t)["input_ids"] for t in texts], lm.tokenizer.pad_token_id, lm.device)
    rows, positions = torch.arange(3), torch.tensor([5, 3, 1])
    delta = torch.randn(3, lm.adapter.hidden_size, generator=torch.Generator().manual_seed(0))
    stack = UpperStack(lm, 1, ids, mask)
    _, final = stack.run(delta, rows, positions)
    shortcut = lm_logits(lm, final)

    def add_delta(hidden: torch.Tensor) -> torch.Tensor:
        bump = torch.zeros_like(hidden)
        bump[rows, positions] = delta
        return hidden + bump

    with hooks.edit_output(lm.adapter.module(lm.adapter.mlp_out_proj(1)), add_delta):
        full = lm.model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert_close_rel(shortcut[real], full[real].float(), rel=1e-5)
    assert not torch.allclose(shortcut[real], lm.model(input_ids=ids, attention_mask=mask).logits[real])


def _responsive_model():
    """A tiny model whose logits react to the residual stream (random tiny models are nearly uniform)."""
    lm = build_tiny_model("llama", num_layers=4)
    with torch.no_grad():
        lm.adapter.module(lm.adapter.final_norm()).weight.mul_(30)
    return lm


def _one_token_requests():
    # The subject ends with a space, so the one-byte target is predicted at the subject's last token.
    facts = [("France ", "R"), ("Spain ", "O"), ("Peru ", "K")]
    return [EditRequest(case_id=str(i), subject=s, prompt="The capital of {}", target_new=t) for i, (s, t) in enumerate(facts)]


def test_mpes_stops_after_patience_passes_with_target_on_top():
    lm, requests, ctx = _responsive_model(), _one_token_requests(), fixed_context_templates(2)
    plain = optimise_targets(lm, requests, ctx, 1, target_settings(max_steps=25))
    early = optimise_targets(lm, requests, ctx, 1, target_settings(max_steps=25, mpes=True, mpes_patience=2))
    assert all(s["stop_reason"] == "max_steps" and s["steps"] == 24 for s in plain.stats)
    for stat in early.stats:
        assert stat["stop_reason"] == "mpes" and stat["all_top1"]
        assert stat["steps"] == stat["mpes_stopped_at"] < 24
    patient = optimise_targets(lm, requests, ctx, 1, target_settings(max_steps=25, mpes=True, mpes_patience=4))
    for quick, slow in zip(early.stats, patient.stats, strict=True):
        assert slow["steps"] > quick["steps"]


def test_batched_targets_equal_one_at_a_time(tiny_llama, requests_3):
    ctx = fixed_context_templates(2)
    settings = target_settings(max_steps=6)
    batched = optimise_targets(tiny_llama, requests_3, ctx, 2, settings)
    single = optimise_targets(tiny_llama, requests_3, ctx, 2, target_settings(max_steps=6, batch_facts=1))
    scale = float(batched.delta.abs().max())
    assert scale > 0
    torch.testing.assert_close(batched.delta, single.delta, atol=1e-4 * scale, rtol=0)
    torch.testing.assert_close(batched.z, single.z, atol=1e-4 * float(batched.z.abs().max()), rtol=0)
    assert [s["steps"] for s in batched.stats] == [s["steps"] for s in single.stats]


def test_batched_equals_single_when_facts_stop_at_different_steps():
    lm, ctx = _responsive_model(), fixed_context_templates(2)
    requests = [*_one_token_requests(), EditRequest(case_id="x", subject="Chad ", prompt="The capital of {}", target_new="Q")]
    settings = target_settings(max_steps=12, mpes=True, mpes_patience=3)
    batched = optimise_targets(lm, requests, ctx, 1, settings)
    single = optimise_targets(lm, requests, ctx, 1, target_settings(max_steps=12, mpes=True, mpes_patience=3, batch_facts=1))
    assert len({s["steps"] for s in batched.stats}) > 1  # the batch shrank during the optimisation
    assert [s["steps"] for s in batched.stats] == [s["steps"] for s in single.stats]
    torch.testing.assert_close(batched.delta, single.delta, atol=1e-4 * float(batched.delta.abs().max()), rtol=0)


def test_only_delta_gets_gradients_and_clamp_holds(tiny_llama, requests_3):
    result = optimise_targets(
        tiny_llama, requests_3, fixed_context_templates(1), 2, target_settings(max_steps=5, clamp_norm_factor=0.1, lr=5.0)
    )
    for param in tiny_llama.model.parameters():
        assert param.grad is None and not param.requires_grad
    assert (result.delta.norm(dim=-1) <= 0.1 * result.init.norm(dim=-1) * (1 + 1e-5)).all()
    for stat in result.stats:
        assert {"case_id", "target_norm", "init_norm", "delta_norm", "steps", "final_prob", "mpes_stopped_at"} <= set(stat)


def test_released_mpes_rule_leaves_out_the_bare_prompt():
    """ENCORE's released check skips each fact's bare prompt: with no other prompt it is met at once."""
    lm, requests = _responsive_model(), _one_token_requests()
    bare_only = fixed_context_templates(0)
    assert bare_only.templates == ("{}",)
    released = optimise_targets(
        lm, requests, bare_only, 1, target_settings(max_steps=25, mpes=True, mpes_patience=3, mpes_rule="released")
    )
    for stat in released.stats:  # met vacuously on passes 0, 1, 2: stops at pass 2 after 2 updates
        assert stat["stop_reason"] == "mpes" and stat["mpes_stopped_at"] == 2 and stat["steps"] == 2
    strict = optimise_targets(lm, requests, bare_only, 1, target_settings(max_steps=25, mpes=True, mpes_patience=3))
    assert all(s["mpes_stopped_at"] is None or s["mpes_stopped_at"] > 2 for s in strict.stats)


def test_released_mpes_rule_never_stops_later_than_the_strict_rule():
    lm, requests, ctx = _responsive_model(), _one_token_requests(), fixed_context_templates(2)
    strict = optimise_targets(lm, requests, ctx, 1, target_settings(max_steps=25, mpes=True, mpes_patience=2))
    released = optimise_targets(
        lm, requests, ctx, 1, target_settings(max_steps=25, mpes=True, mpes_patience=2, mpes_rule="released")
    )
    for s, r in zip(strict.stats, released.stats, strict=True):
        assert r["steps"] <= s["steps"]


def test_unknown_mpes_rule_is_rejected():
    with pytest.raises(ValueError, match="mpes_rule"):
        target_settings(mpes_rule="first_prompt")  # type: ignore[arg-type]


def test_settings_come_from_the_config_field_by_field():
    """Every target setting follows its config field (values away from the defaults), and unbatched
    targets mean one fact at a time."""
    config = LocateEditConfig(
        v_lr=0.3, v_num_grad_steps=7, v_weight_decay=0.2, kl_factor=0.1, clamp_norm_factor=2.0,
        v_loss_threshold=0.01, mpes=True, mpes_patience=5, mpes_rule="released", kl_prompt="{} was",
        target_batch_facts=4, target_suffix_only=False,
    )
    assert TargetSettings.from_config(config) == TargetSettings(
        lr=0.3, max_steps=7, weight_decay=0.2, kl_factor=0.1, clamp_norm_factor=2.0, loss_threshold=0.01,
        mpes=True, mpes_patience=5, mpes_rule="released", kl_prompt="{} was", batch_facts=4, suffix_only=False,
    )
    unbatched = config.model_copy(update={"batch_targets": False})
    assert TargetSettings.from_config(unbatched).batch_facts == 1
