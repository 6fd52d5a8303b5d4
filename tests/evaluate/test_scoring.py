"""Batched scoring equals a plain full-sequence forward; a shared context gives the same numbers with
and without its key/value cache."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_close_rel

from seqedit.evaluate.scoring import length_buckets, score_targets
from seqedit.models.tiny import build_tiny_model
from seqedit.models.tokens import encode_prompt_targets, target_argmax_hits, target_log_probs

PROMPTS = ["The capital of France is", "ab", "The capital of France is", "Hello world, and", "x", "ab"]
TARGETS = ["Paris", "cde", "Rome", "friends", "y", "cdf"]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_matches_full_forward(family):
    lm = build_tiny_model(family, num_layers=2, hidden=32)
    scores = score_targets(lm, PROMPTS, TARGETS, batch_size=2)
    batch = encode_prompt_targets(lm.tokenizer, PROMPTS, TARGETS)
    with torch.no_grad():
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    total, mean = target_log_probs(logits, batch)
    assert_close_rel(scores.sum_log_prob, total.double(), rel=1e-5)
    assert_close_rel(scores.mean_log_prob, mean.double(), rel=1e-5)
    assert scores.hits.tolist() == target_argmax_hits(logits, batch).sum(-1).tolist()
    assert scores.lengths.tolist() == batch.target_lengths
    assert scores.token_accuracy.shape == (len(PROMPTS),)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_context_cache_gives_the_same_scores(family):
    lm = build_tiny_model(family, num_layers=2, hidden=32)
    context = "Some shared demonstrations.\n\nQ: a\nA: b\n\n"
    cached = score_targets(lm, PROMPTS, TARGETS, context=context, batch_size=4)
    plain = score_targets(lm, PROMPTS, TARGETS, context=context, cache_context=False, batch_size=3)
    assert_close_rel(cached.sum_log_prob, plain.sum_log_prob, rel=1e-5)
    assert cached.hits.tolist() == plain.hits.tolist()
    # the context matters
    alone = score_targets(lm, PROMPTS, TARGETS)
    assert not torch.allclose(alone.sum_log_prob, plain.sum_log_prob)


def test_empty_and_bad_batch_size():
    lm = build_tiny_model("llama", num_layers=1, hidden=32)
    assert score_targets(lm, [], []).sum_log_prob.numel() == 0
    with pytest.raises(ValueError, match="batch_size"):
        score_targets(lm, ["a"], ["b"], batch_size=0)


def test_length_buckets_limit_padding_and_batch_size():
    lengths = [292, 215, 109, 106, 85, 79, 45, 45, 37, 37]
    buckets = length_buckets(lengths, batch_size=3, max_tokens=500)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for bucket in buckets:
        longest = max(lengths[i] for i in bucket)
        assert len(bucket) <= 3
        assert len(bucket) == 1 or len(bucket) * longest <= 500
        assert all(2 * lengths[i] >= longest for i in bucket)
    assert buckets[0] == [0]  # 292 cannot share a 500-token batch
    assert length_buckets([5, 5, 5], batch_size=8, max_tokens=1) == [[0], [1], [2]]
