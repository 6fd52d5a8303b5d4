"""The prompt + target loss of the gradient-based editors (FT, FT-L, LoRA, MEND).

A request is learned as the teacher-forced continuation ``prompt -> " " + target_new``; the loss of a row
is the mean negative log-likelihood of its target tokens, and the loss of a batch the mean over rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from seqedit.data.records import EditRequest
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch, encode_prompt_targets, target_log_probs


def request_batch(lm: LoadedModel, requests: Sequence[EditRequest]) -> PromptTargetBatch:
    """``full_prompt -> target_new`` for every request, on the model's device."""
    if not requests:
        raise ValueError("no edit requests given")
    prompts = [r.full_prompt for r in requests]
    targets = [r.target_new for r in requests]
    return encode_prompt_targets(lm.tokenizer, prompts, targets).to(lm.device)


def forward_logits(lm: LoadedModel, batch: PromptTargetBatch) -> torch.Tensor:
    return lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def row_nll(logits: torch.Tensor, batch: PromptTargetBatch) -> torch.Tensor:
    """``[batch]`` mean negative log-likelihood of each row's target tokens."""
    _total, mean = target_log_probs(logits, batch)
    return -mean


@torch.no_grad()
def target_probabilities(lm: LoadedModel, batch: PromptTargetBatch) -> list[float]:
    """Probability of each row's whole target sequence (product over its tokens)."""
    total, _mean = target_log_probs(forward_logits(lm, batch), batch)
    return [float(v) for v in total.double().exp()]


def probability_stats(
    requests: Sequence[EditRequest], init_probs: Sequence[float], final_probs: Sequence[float], **shared: Any
) -> list[dict[str, Any]]:
    """Per-request figures of a gradient editor: the target's probability before and after the edit, plus
    the ``shared`` figures of the whole batch (steps, final loss)."""
    return [
        {"case_id": r.case_id, **shared, "init_prob": p0, "final_prob": p1}
        for r, p0, p1 in zip(requests, init_probs, final_probs, strict=True)
    ]


@contextmanager
def frozen_eval(model: torch.nn.Module) -> Iterator[None]:
    """Run the block with the model in eval mode and every parameter frozen, then restore both exactly.

    Editors train their own tensors (deltas, adapters, hypernetworks); the model's own ``requires_grad``
    flags and train/eval mode are never left changed.
    """
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    modes = {name: m.training for name, m in model.named_modules()}
    model.eval()
    model.requires_grad_(False)
    try:
        yield
    finally:
        for name, p in model.named_parameters():
            if name in flags:
                p.requires_grad_(flags[name])
        for name, m in model.named_modules():
            if name in modes:
                m.train(modes[name])
