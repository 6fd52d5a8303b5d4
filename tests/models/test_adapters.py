"""Adapters on tiny random models of every family: sites resolve, hooks see the right shapes, and
writing a weight through the adapter changes the model's output."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_close_rel

from seqedit.models.adapters import adapter_class_for
from seqedit.models.hooks import StopForward, capture, edit_output, stop_after
from seqedit.models.tiny import TINY_FAMILIES, build_tiny_model

LAYERS, HIDDEN = 3, 32


@pytest.fixture(params=TINY_FAMILIES)
def tiny(request):
    return build_tiny_model(request.param, num_layers=LAYERS, hidden=HIDDEN, seed=1)


def _inputs(tiny, text="The capital of France is"):
    return tiny.tokenizer(text, return_tensors="pt")


def test_structure(tiny):
    a = tiny.adapter
    assert a.num_layers == LAYERS
    assert a.hidden_size == HIDDEN
    assert a.mlp_hidden_size > HIDDEN
    for layer in range(LAYERS):
        assert a.weight(a.mlp_out_proj(layer)).shape == (HIDDEN, a.mlp_hidden_size)
        assert a.weight(a.attn_out_proj(layer)).shape[0] == HIDDEN
        for path in a.mlp_in_projs(layer):
            assert a.weight(path).shape[1] == HIDDEN
    kinds = {m.kind for m in a.matrices("all")}
    assert kinds == {"mlp.out_proj", "mlp.in_proj", "attn.out_proj", "attn.in_proj"}
    assert [m.layer for m in a.matrices("edited")] == list(range(LAYERS))


def test_hooks_capture_key_value_and_residual_shapes(tiny):
    a = tiny.adapter
    batch = _inputs(tiny)
    seq = batch["input_ids"].shape[1]
    layer = 1
    proj = a.module(a.mlp_out_proj(layer))
    with capture({"key": proj}, "input") as keys, capture(
        {"value": proj, "block": a.module(a.block(layer)), "mlp": a.module(a.mlp_residual(layer)),
         "attn": a.module(a.attn_residual(layer))}, "output"
    ) as outs:
        tiny.model(**batch)
    assert keys["key"].shape == (1, seq, a.mlp_hidden_size)
    for name in ("value", "block", "mlp", "attn"):
        assert outs[name].shape == (1, seq, HIDDEN), name
    # The projection's output is its weight applied to its input (canonical [out, in] layout).
    bias = getattr(proj, "bias", None)
    expected = keys["key"] @ a.weight(a.mlp_out_proj(layer)).T + (0 if bias is None else bias)
    assert_close_rel(outs["value"], expected, rel=1e-5)


def test_block_output_is_next_hidden_state(tiny):
    a = tiny.adapter
    batch = _inputs(tiny)
    with capture({"b0": a.module(a.block(0))}) as outs:
        hidden = tiny.model(**batch, output_hidden_states=True).hidden_states
    torch.testing.assert_close(outs["b0"], hidden[1])


def test_writing_a_weight_changes_the_output(tiny):
    a = tiny.adapter
    batch = _inputs(tiny)
    before = tiny.model(**batch).logits
    path = a.mlp_out_proj(1)
    delta = torch.randn(a.weight(path).shape) * 0.5
    native = a.add_to_weight(path, delta)
    after = tiny.model(**batch).logits
    assert not torch.allclose(before, after)
    a.add_to_weight(path, -delta)
    assert_close_rel(tiny.model(**batch).logits, before, rel=1e-5)
    assert native.shape == a.module(path).weight.shape


def test_gpt2_conv1d_layout_is_handled():
    tiny = build_tiny_model("gpt2", num_layers=2, hidden=16)
    a = tiny.adapter
    path = a.mlp_out_proj(0)
    assert a.is_transposed(path)
    assert a.module(path).weight.shape == (a.mlp_hidden_size, a.hidden_size)  # stored [in, out]
    assert a.weight(path).shape == (a.hidden_size, a.mlp_hidden_size)


def test_edit_output_and_stop_after(tiny):
    a = tiny.adapter
    batch = _inputs(tiny)
    base = tiny.model(**batch).logits
    with edit_output(a.module(a.block(0)), lambda h: h + 1.0):
        shifted = tiny.model(**batch).logits
    assert not torch.allclose(base, shifted)
    with capture({"b0": a.module(a.block(0))}) as outs, stop_after(a.module(a.block(0))):
        with pytest.raises(StopForward):
            tiny.model(**batch)
    assert "b0" in outs


def test_unknown_model_type_names_supported_ones():
    with pytest.raises(ValueError, match="llama"):
        adapter_class_for("made_up_arch")


def test_site_lookup(tiny):
    a = tiny.adapter
    assert a.site("mlp.out_proj", 0) == a.mlp_out_proj(0)
    assert a.site("lm_head") == a.lm_head()
    with pytest.raises(ValueError):
        a.site("mlp.out_proj")
    with pytest.raises(IndexError):
        a.block(LAYERS)
