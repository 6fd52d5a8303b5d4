"""Keys and hidden states at the subject's last token, averaged over context prefixes.

The *key* of a fact at layer ``l`` is the input of that layer's MLP out-projection at the last token of
the subject, averaged over the context templates in one of two ways (``KeyAverage``):

* ``bare_half`` (MEMIT's ``compute_ks``): the bare prompt and the mean of the prefixed prompts weigh one
  half each (with no prefixes, the bare prompt's key alone);
* ``mean`` (ROME's ``compute_u``, kept by r-ROME): the plain mean over all templates, bare one included.

The same key is used wherever a method needs "the key of the fact" -- ROME's rank-one update uses it both
in the direction ``C⁻¹k`` and in the normaliser ``kᵀC⁻¹k`` and measures its residual against it (the r-ROME
fix, Gupta et al. 2024, "Rebuilding ROME"). The bare prompt's key is returned too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from seqedit.data.records import EditRequest
from seqedit.editors.context import ContextTemplates
from seqedit.models import hooks
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import subject_token_index

KeyAverage = Literal["bare_half", "mean"]
KEY_AVERAGES: tuple[KeyAverage, ...] = ("bare_half", "mean")


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ``input_ids`` and ``attention_mask`` on ``device``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def fill_subject(template: str, subject: str) -> str:
    head, _, tail = template.partition("{}")
    return head + subject + tail


@dataclass
class SubjectRows:
    """One row per (fact, context template): the filled-in text and the subject's last-token index."""

    token_ids: list[list[int]]
    subject_index: list[int]
    fact: list[int]
    template: list[int]


def subject_rows(lm: LoadedModel, requests: Sequence[EditRequest], contexts: ContextTemplates) -> SubjectRows:
    rows = SubjectRows([], [], [], [])
    for f, request in enumerate(requests):
        for t, template in enumerate(contexts.templates):
            with_slot = contexts.apply(template, request.prompt)
            ids = list(lm.tokenizer(fill_subject(with_slot, request.subject))["input_ids"])
            index = subject_token_index(lm.tokenizer, with_slot, request.subject)
            if not 0 <= index < len(ids):
                raise ValueError(f"case {request.case_id}: cannot locate subject {request.subject!r} in the prompt")
            rows.token_ids.append(ids)
            rows.subject_index.append(index)
            rows.fact.append(f)
            rows.template.append(t)
    return rows


def _row_chunks(rows: SubjectRows, token_budget: int) -> list[list[int]]:
    chunks: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i, ids in enumerate(rows.token_ids):
        new_width = max(width, len(ids))
        if current and new_width * (len(current) + 1) > token_budget:
            chunks.append(current)
            current, new_width = [], len(ids)
        current.append(i)
        width = new_width
    if current:
        chunks.append(current)
    return chunks


def average_over_contexts(
    per_row: torch.Tensor, rows: SubjectRows, n_facts: int, average: KeyAverage = "bare_half"
) -> torch.Tensor:
    """Average ``[rows, d]`` into ``[facts, d]``: half the bare prompt, half the mean of the prefixed ones
    (``bare_half``), or the plain mean of every row of the fact (``mean``)."""
    if average not in KEY_AVERAGES:
        raise ValueError(f"key average must be one of {KEY_AVERAGES}, got {average!r}")
    fact = torch.tensor(rows.fact, device=per_row.device)
    out = torch.zeros(n_facts, per_row.shape[1], dtype=per_row.dtype, device=per_row.device)
    if average == "mean":
        ones = torch.ones(len(rows.fact), dtype=per_row.dtype, device=per_row.device)
        counts = torch.zeros(n_facts, dtype=per_row.dtype, device=per_row.device).index_add_(0, fact, ones)
        return out.index_add_(0, fact, per_row) / counts[:, None]
    bare = torch.tensor([t == 0 for t in rows.template], device=per_row.device)
    bare_mean = torch.zeros_like(out).index_add_(0, fact[bare], per_row[bare])
    prefixed = ~bare
    if not prefixed.any():
        return bare_mean  # one bare row per fact
    counts = torch.zeros(n_facts, dtype=per_row.dtype, device=per_row.device).index_add_(
        0, fact[prefixed], torch.ones(int(prefixed.sum()), dtype=per_row.dtype, device=per_row.device)
    )
    prefixed_mean = torch.zeros_like(out).index_add_(0, fact[prefixed], per_row[prefixed]) / counts[:, None]
    out = 0.5 * bare_mean + 0.5 * prefixed_mean
    return out


@dataclass
class KeysAndHidden:
    keys: dict[int, torch.Tensor]  # layer -> [facts, d_mlp], context-averaged keys
    bare_keys: dict[int, torch.Tensor]  # layer -> [facts, d_mlp], the keys on the bare prompt
    hidden: torch.Tensor | None  # [facts, d]: block output at ``hidden_layer`` on the bare prompt


@torch.no_grad()
def keys_and_hidden(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    contexts: ContextTemplates,
    key_layers: Sequence[int],
    hidden_layer: int | None = None,
    *,
    token_budget: int = 8192,
    average: KeyAverage = "bare_half",
) -> KeysAndHidden:
    """Context-averaged keys at ``key_layers`` and the bare-prompt hidden state after ``hidden_layer``,
    from one forward pass per chunk of rows, stopped after the highest layer needed."""
    adapter = lm.adapter
    rows = subject_rows(lm, requests, contexts)
    key_modules = {str(layer): adapter.module(adapter.mlp_out_proj(layer)) for layer in key_layers}
    if not key_layers and hidden_layer is None:
        raise ValueError("ask for keys at one layer at least, or for the hidden state")
    if hidden_layer is not None and hidden_layer >= max(key_layers, default=-1):
        stop_module = adapter.module(adapter.block(hidden_layer))
    else:
        stop_module = adapter.module(adapter.mlp_out_proj(max(key_layers)))
    hidden_modules = {"h": adapter.module(adapter.block(hidden_layer))} if hidden_layer is not None else {}
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    per_row_keys: dict[int, list[torch.Tensor]] = {layer: [] for layer in key_layers}
    per_row_hidden: list[torch.Tensor] = []
    for chunk in _row_chunks(rows, token_budget):
        ids, mask = pad_rows([rows.token_ids[i] for i in chunk], pad_id, lm.device)
        positions = torch.tensor([rows.subject_index[i] for i in chunk], device=lm.device)
        batch_index = torch.arange(len(chunk), device=lm.device)
        with hooks.capture(key_modules, "input") as k_store, hooks.capture(hidden_modules, "output") as h_store:
            with hooks.stop_after(stop_module):
                with contextlib.suppress(hooks.StopForward):
                    lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
        for layer in key_layers:
            per_row_keys[layer].append(k_store[str(layer)][batch_index, positions].float())
        if hidden_layer is not None:
            per_row_hidden.append(h_store["h"][batch_index, positions].float())
    all_keys = {layer: torch.cat(parts) for layer, parts in per_row_keys.items()}
    keys = {layer: average_over_contexts(k, rows, len(requests), average) for layer, k in all_keys.items()}
    bare_rows = [i for i, t in enumerate(rows.template) if t == 0]  # one bare row per fact, in fact order
    bare_keys = {layer: k[bare_rows] for layer, k in all_keys.items()}
    hidden = torch.cat(per_row_hidden)[bare_rows] if hidden_layer is not None else None
    return KeysAndHidden(keys, bare_keys, hidden)
