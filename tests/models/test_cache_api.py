"""The cache argument is read from the model's own forward signature (transformers 5.2x: ``cache``)."""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

from seqedit.models.cache_api import cache_argument, output_cache, with_cache
from seqedit.models.tiny import build_tiny_model


class _OldStyle(torch.nn.Module):
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):  # type: ignore[no-untyped-def]
        return input_ids


def test_the_name_follows_the_signature():
    lm = build_tiny_model("llama", num_layers=2, hidden=32)
    expected = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"
    assert cache_argument(lm.model) == expected
    assert cache_argument(_OldStyle()) == "past_key_values"
    assert with_cache(_OldStyle(), "c") == {"past_key_values": "c", "use_cache": True}


def test_a_cached_continuation_equals_the_full_forward():
    lm = build_tiny_model("llama", num_layers=2, hidden=32)
    ids = torch.tensor([[5, 9, 13, 2, 7, 11]])
    with torch.no_grad():
        full = lm.model(input_ids=ids).logits
        head = lm.model(input_ids=ids[:, :4], **with_cache(lm.model, DynamicCache(config=lm.model.config)))
        cache = output_cache(head)
        assert cache is not None
        tail = lm.model(input_ids=ids[:, 4:], **with_cache(lm.model, cache)).logits
    scale = float(full.abs().max())
    assert float((tail - full[:, 4:]).abs().max()) <= 1e-5 * scale
