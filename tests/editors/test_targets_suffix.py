"""The suffix-only replay of the target optimisation against the full-sequence reference path."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from tolerances import assert_close_rel

from seqedit.data.records import EditRequest
from seqedit.editors.context import ContextTemplates
from seqedit.editors.keys import pad_rows
from seqedit.editors.locate import LocateEditConfig
from seqedit.editors.replay import SuffixStack, SuffixUnsupported, UpperStack, lm_logits
from seqedit.editors.targets import TargetSettings, optimise_targets
from seqedit.models import hooks
from seqedit.models.tiny import TINY_FAMILIES, build_tiny_model


def target_settings(**changes: Any) -> TargetSettings:
    """The defaults of a locate-and-edit config, with ``changes`` (TargetSettings' names)."""
    return replace(TargetSettings.from_config(LocateEditConfig()), **changes)


# Short prefixes: with the byte-level tiny tokenizer the rows stay inside tiny Gemma 3's 64-token window.
SHORT_CONTEXTS = ContextTemplates(("{}", "Note: {}", "So, {}"), "fixed")


def _requests() -> list[EditRequest]:
    """Facts whose subjects sit at different depths, with targets of different lengths."""
    facts = [
        ("France", "The capital of {} is", "Rome"),
        ("Peru", "{} is located in", "Oslo city"),
        ("the United Kingdom", "People in {} speak", "K"),
    ]
    return [EditRequest(case_id=str(i), subject=s, prompt=p, target_new=t) for i, (s, p, t) in enumerate(facts)]


def _rows(lm, texts):
    return pad_rows([lm.tokenizer(t)["input_ids"] for t in texts], lm.tokenizer.pad_token_id, lm.device)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_suffix_stack_matches_full_forward_with_delta_hook(family):
    lm = build_tiny_model(family, num_layers=4)
    ids, mask = _rows(lm, ["The capital of France is", "Hello there, world", "abc", "A longer sentence about it"])
    rows, split = torch.arange(4), torch.tensor([5, 3, 1, 12])
    delta = torch.randn(4, lm.adapter.hidden_size, generator=torch.Generator().manual_seed(0))
    stack = SuffixStack(lm, 1, ids, mask, split)
    block_out, final = stack.run(delta, rows, split)
    shortcut = lm_logits(lm, final)
    assert shortcut.shape[1] == int((mask.sum(1) - split).max()) < ids.shape[1]

    def add_delta(hidden: torch.Tensor) -> torch.Tensor:
        bump = torch.zeros_like(hidden)
        bump[rows, split] = delta
        return hidden + bump

    block = lm.adapter.module(lm.adapter.block(1))
    with hooks.edit_output(lm.adapter.module(lm.adapter.mlp_out_proj(1)), add_delta), hooks.capture({"b": block}) as got:
        full = lm.model(input_ids=ids, attention_mask=mask).logits.float()
    for r in range(4):
        start, stop = int(split[r]), int(mask[r].sum())
        assert_close_rel(shortcut[r, : stop - start], full[r, start:stop], rel=1e-5)
        assert_close_rel(block_out[r, : stop - start], got["b"][r, start:stop], rel=1e-5)
    # δ reaches the suffix: without it the logits differ.
    _, plain = stack.run(None, rows, split)
    assert not torch.allclose(lm_logits(lm, plain), shortcut, atol=1e-4)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_suffix_path_equals_full_path(family):
    lm = build_tiny_model(family, num_layers=4)
    settings = target_settings(max_steps=6, lr=1.0)
    fast = optimise_targets(lm, _requests(), SHORT_CONTEXTS, 1, settings)
    full = optimise_targets(lm, _requests(), SHORT_CONTEXTS, 1, target_settings(max_steps=6, lr=1.0, suffix_only=False))
    assert fast.info["replays"] == {"suffix": 1} and not fast.info["fallbacks"]
    assert full.info["replays"] == {"full": 1} and not full.info["fallbacks"]
    assert float(fast.delta.norm(dim=-1).min()) > 0
    torch.testing.assert_close(fast.init, full.init, atol=1e-5 * float(full.init.abs().max()), rtol=0)
    torch.testing.assert_close(fast.delta, full.delta, atol=1e-4 * float(full.delta.abs().max()), rtol=0)
    torch.testing.assert_close(fast.z, full.z, atol=1e-4 * float(full.z.abs().max()), rtol=0)
    for a, b in zip(fast.stats, full.stats, strict=True):
        assert a["steps"] == b["steps"] and a["stop_reason"] == b["stop_reason"]
        assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-4)


def _responsive_model():
    """Tiny Llama whose logits react to the residual stream, so MPES stops facts at different steps."""
    lm = build_tiny_model("llama", num_layers=4)
    with torch.no_grad():
        lm.adapter.module(lm.adapter.final_norm()).weight.mul_(30)
    return lm


def test_suffix_path_equals_full_path_with_mpes_and_a_shrinking_batch():
    lm = _responsive_model()
    facts = [("France ", "R"), ("Spain ", "O"), ("Peru ", "K"), ("Chad ", "Q")]
    requests = [EditRequest(case_id=str(i), subject=s, prompt="The capital of {}", target_new=t) for i, (s, t) in enumerate(facts)]
    settings = {"max_steps": 12, "mpes": True, "mpes_patience": 3, "kl_factor": 0.5}
    fast = optimise_targets(lm, requests, SHORT_CONTEXTS, 1, target_settings(**settings))
    full = optimise_targets(lm, requests, SHORT_CONTEXTS, 1, target_settings(**settings, suffix_only=False))
    assert len({s["steps"] for s in fast.stats}) > 1  # the batch shrank and was rebuilt
    assert fast.info["replays"]["suffix"] > 1 and "full" not in fast.info["replays"]
    assert [s["steps"] for s in fast.stats] == [s["steps"] for s in full.stats]
    assert [s["stop_reason"] for s in fast.stats] == [s["stop_reason"] for s in full.stats]
    torch.testing.assert_close(fast.z, full.z, atol=1e-4 * float(full.z.abs().max()), rtol=0)


def test_falls_back_when_the_attention_window_is_too_short():
    lm = build_tiny_model("gemma3", num_layers=4)  # sliding window of 64 tokens
    long_prompt = "In a long and winding sentence that goes on and on, the capital of {} is"
    requests = [EditRequest(case_id="0", subject="France", prompt=long_prompt, target_new="Rome")]
    ids, mask = _rows(lm, [long_prompt.format("France") + " Rome"])
    with pytest.raises(SuffixUnsupported, match="attention window"):
        SuffixStack(lm, 1, ids, mask, torch.tensor([len(long_prompt) - 6]))
    settings = target_settings(max_steps=3)
    fast = optimise_targets(lm, requests, SHORT_CONTEXTS, 1, settings)
    full = optimise_targets(lm, requests, SHORT_CONTEXTS, 1, target_settings(max_steps=3, suffix_only=False))
    assert fast.info["replays"] == {"full": 1}
    assert len(fast.info["fallbacks"]) == 1 and "attention window (64)" in fast.info["fallbacks"][0]
    assert torch.equal(fast.z, full.z)


def test_falls_back_when_no_token_precedes_any_subject():
    lm = build_tiny_model("llama", num_layers=4)
    # One-byte subjects at the start of the prompt and of the KL prompt, no context prefixes.
    requests = [EditRequest(case_id=str(i), subject=s, prompt="{} is in", target_new="Rome") for i, s in enumerate("AB")]
    result = optimise_targets(lm, requests, ContextTemplates(("{}",), "none"), 1, target_settings(max_steps=2))
    assert result.info["replays"] == {"full": 1}
    assert result.info["fallbacks"] == ["no row has a token before its subject's last token: nothing to cache"]


def test_split_points_outside_rows_are_refused():
    lm = build_tiny_model("llama", num_layers=4)
    ids, mask = _rows(lm, ["abc", "abcdef"])
    with pytest.raises(SuffixUnsupported, match="outside its row"):
        SuffixStack(lm, 1, ids, mask, torch.tensor([3, 2]))  # row 0 has tokens 0..2 only


def test_suffix_replay_gives_delta_gradients_only(tiny_llama):
    ids, mask = _rows(tiny_llama, ["The capital of France is", "Hello there"])
    split = torch.tensor([10, 4])
    stack = SuffixStack(tiny_llama, 2, ids, mask, split)
    reference = UpperStack(tiny_llama, 2, ids, mask)
    delta = torch.zeros(2, tiny_llama.adapter.hidden_size, requires_grad=True)
    _, final = stack.run(delta, torch.arange(2), split)
    final.sum().backward()
    assert delta.grad is not None and float(delta.grad.abs().sum()) > 0
    for param in tiny_llama.model.parameters():
        assert param.grad is None
    # A second replay starts from the same cached prefix (nothing was appended to it).
    _, again = stack.run(None, torch.arange(2), split)
    _, whole = reference.run(None, torch.arange(2), split)
    assert_close_rel(again[0, :4], whole[0, 10:14], rel=1e-5)


@pytest.mark.parametrize("extra", [0, 1])
def test_window_guard_admits_exact_layouts_and_refuses_longer_ones(monkeypatch, extra):
    """Tiny Gemma 3 (every layer local, window 64): at prefix + suffix width = 64 the suffix replay is exact
    and admitted; one position more and the guard refuses it (a cached key may then fall outside the window
    in the layout, whether or not it changes these particular outputs)."""
    import seqedit.editors.replay as replay

    lm = build_tiny_model("gemma3", num_layers=4)
    window = replay.sliding_window_of(lm)
    assert window == 64
    late, early = "x" * 40, "y" * (window - 39 + 1 + extra)
    ids, mask = _rows(lm, [late, early])
    split = torch.tensor([39, 1])  # prefix 39; the early row's suffix is window - 39 + extra wide
    monkeypatch.setattr(replay, "sliding_window_of", lambda _lm: None)  # the guard off
    _, final = SuffixStack(lm, 1, ids, mask, split).run(None, torch.arange(2), split)
    _, whole = UpperStack(lm, 1, ids, mask).run(None, torch.arange(2), split)
    width = len(early) - 1
    assert 39 + width == window + extra
    if not extra:
        assert_close_rel(final[1, :width], whole[1, 1 : 1 + width], rel=1e-5)
    monkeypatch.undo()
    if extra:
        with pytest.raises(SuffixUnsupported, match="attention window"):
            SuffixStack(lm, 1, ids, mask, split)
    else:
        SuffixStack(lm, 1, ids, mask, split)


def test_editor_warns_when_it_falls_back_and_edits_the_same(fast):
    """MEMIT on tiny Gemma 3 with a prompt longer than its window: a warning names the reason, and the
    edit equals the one made with the suffix-only replay switched off."""
    from seqedit.editors import create_editor

    lm = build_tiny_model("gemma3", num_layers=4)
    long_prompt = "In a long and winding sentence that goes on and on and on, the capital of {} is"
    requests = [EditRequest(case_id="0", subject="France", prompt=long_prompt, target_new="Rome")]
    with pytest.warns(UserWarning, match="attention window"):
        fast_path = create_editor("memit", lm, {**fast, "layers": [1]}).apply(lm, requests)
    fast_delta = {k: v.clone() for k, v in fast_path.deltas.items()}
    fast_path.undo(lm.model)
    every = create_editor("memit", lm, {**fast, "layers": [1], "target_suffix_only": False}).apply(lm, requests)
    for name, delta in every.deltas.items():
        torch.testing.assert_close(fast_delta[name], delta)
