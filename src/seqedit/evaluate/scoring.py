"""Batched teacher-forced scoring of targets as continuations of prompts.

Every evaluator funnels through :func:`score_targets`: prompts and targets are encoded once with
:func:`seqedit.models.tokens.encode_prompt_targets`, identical model inputs are run once (scoring two
single-token options of one prompt needs one forward pass, not two), rows are batched by length, and
only the logits at target positions are materialised (``logits_to_keep``), so a 50k-token vocabulary
costs ``batch × target_tokens × vocab`` floats instead of ``batch × sequence × vocab``.

A shared ``context`` (a few-shot prefix) is encoded separately and, by default, run once; its key/value
cache is reused for every batch. Without the cache the same token sequence (context tokens followed by
the row's tokens) is fed in full, so both paths give the same numbers up to float rounding.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from seqedit.models.cache_api import output_cache, with_cache
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import (
    PromptTargetBatch,
    encode_prompt_targets,
    target_argmax_hits,
    target_log_probs,
)


@dataclass(frozen=True)
class TargetScores:
    """Per row (one prompt-target pair), in input order; CPU tensors."""

    sum_log_prob: torch.Tensor  # [n] float64: sum over target tokens of log p(token | prefix)
    mean_log_prob: torch.Tensor  # [n] float64: the same divided by the number of target tokens
    hits: torch.Tensor  # [n] long: target tokens whose argmax under teacher forcing is right
    lengths: torch.Tensor  # [n] long: number of target tokens

    @property
    def all_correct(self) -> torch.Tensor:
        """[n] bool: every target token is the argmax (teacher-forced top-1 of the whole target)."""
        return self.hits == self.lengths

    @property
    def token_accuracy(self) -> torch.Tensor:
        return self.hits.double() / self.lengths.double()


@dataclass(frozen=True)
class _UniqueRow:
    ids: tuple[int, ...]
    prompt_length: int

    @property
    def target_length(self) -> int:
        """Targets fed without their last token: len = prompt + target - 1."""
        return len(self.ids) - self.prompt_length + 1


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def max_positions(model: torch.nn.Module) -> int | None:
    """The longest sequence the model's configuration allows (None when it states no limit)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def logits_at(model: torch.nn.Module, positions: torch.Tensor, **inputs: object) -> torch.Tensor:
    """Logits ``[batch, len(positions), vocab]`` at the given sequence positions."""
    if _supports_logits_to_keep(model):
        return model(**inputs, logits_to_keep=positions).logits
    return model(**inputs).logits[:, positions]


class _ContextCache:
    """The key/value cache of a shared context, copied for each batch (the model appends to it)."""

    def __init__(self, model: torch.nn.Module, context_ids: torch.Tensor) -> None:
        extra = {"logits_to_keep": 1} if _supports_logits_to_keep(model) else {}
        out = model(input_ids=context_ids[None], use_cache=True, **extra)
        self.cache = output_cache(out)
        self.length = int(context_ids.shape[0])

    def for_batch(self, batch_size: int) -> object:
        cache = copy.deepcopy(self.cache)
        if batch_size > 1:
            cache.batch_repeat_interleave(batch_size)
        return cache


def length_buckets(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first.

    A batch closes when it holds ``batch_size`` items, when one more would pad it beyond ``max_tokens``
    tokens, or when the next item is less than half as long as the batch's longest (padding would
    then waste over half the batch's compute). A single item longer than ``max_tokens`` forms its own batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            longest = lengths[current[0]]
            full = len(current) >= batch_size or (len(current) + 1) * longest > max_tokens
            if full or 2 * lengths[i] < longest:
                batches.append(current)
                current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def score_targets(
    lm: LoadedModel,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    context: str | None = None,
    cache_context: bool = True,
    batch_size: int = 32,
    max_batch_tokens: int = 4096,
    show_progress: bool = False,
    desc: str = "scoring",
) -> TargetScores:
    """Score each ``target`` as the continuation of its ``prompt`` (optionally after ``context``).

    A forward pass takes at most ``batch_size`` distinct inputs and ``max_batch_tokens`` padded tokens
    (the context excluded).
    """
    if not prompts:
        empty = torch.zeros(0, dtype=torch.float64)
        return TargetScores(empty, empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tok, model, device = lm.tokenizer, lm.model, lm.device
    batch = encode_prompt_targets(tok, prompts, targets, add_special_tokens=context is None)
    lengths = batch.attention_mask.sum(1).tolist()
    unique: dict[_UniqueRow, int] = {}
    row_to_unique: list[int] = []
    for i, (length, p_len) in enumerate(zip(lengths, batch.prompt_lengths, strict=True)):
        key = _UniqueRow(tuple(batch.input_ids[i, :length].tolist()), p_len)
        row_to_unique.append(unique.setdefault(key, len(unique)))
    unique_rows = list(unique)
    rows_of_unique: list[list[int]] = [[] for _ in unique_rows]
    for row, u in enumerate(row_to_unique):
        rows_of_unique[u].append(row)

    context_ids = torch.tensor(tok(context)["input_ids"], dtype=torch.long) if context else None
    if context_ids is not None and context_ids.numel() == 0:
        context_ids = None
    longest = max(len(r.ids) for r in unique_rows) + (0 if context_ids is None else int(context_ids.shape[0]))
    limit = max_positions(model)
    if limit is not None and longest > limit:
        raise ValueError(
            f"a scored sequence is {longest} tokens (context included) but the model takes at most {limit}; "
            "use fewer demonstrations or shorter prompts"
        )
    cache = (
        _ContextCache(model, context_ids.to(device)) if context_ids is not None and cache_context else None
    )

    n = len(prompts)
    sum_lp = torch.zeros(n, dtype=torch.float64)
    mean_lp = torch.zeros(n, dtype=torch.float64)
    hits = torch.zeros(n, dtype=torch.long)
    chunks = length_buckets([len(r.ids) for r in unique_rows], batch_size, max_batch_tokens)
    for chunk in tqdm(chunks, desc=desc, disable=not show_progress, leave=False):
        _score_chunk(
            model,
            device,
            batch,
            unique_rows,
            rows_of_unique,
            chunk,
            context_ids,
            cache,
            tok.pad_token_id,
            sum_lp,
            mean_lp,
            hits,
        )
    return TargetScores(sum_lp, mean_lp, hits, torch.tensor(batch.target_lengths, dtype=torch.long))


def _score_chunk(
    model: torch.nn.Module,
    device: torch.device,
    batch: PromptTargetBatch,
    unique_rows: list[_UniqueRow],
    rows_of_unique: list[list[int]],
    chunk: list[int],
    context_ids: torch.Tensor | None,
    cache: _ContextCache | None,
    pad_id: int | None,
    sum_lp: torch.Tensor,
    mean_lp: torch.Tensor,
    hits: torch.Tensor,
) -> None:
    rows = [unique_rows[u] for u in chunk]
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r.ids)] = torch.tensor(r.ids)
        mask[j, : len(r.ids)] = 1
    offset = 0  # with a cache, logits cover the new tokens only
    inputs: dict[str, object]
    if cache is not None:
        full_mask = torch.cat([torch.ones(len(rows), cache.length, dtype=torch.long), mask], dim=1)
        inputs = {
            "input_ids": ids.to(device),
            "attention_mask": full_mask.to(device),
            **with_cache(model, cache.for_batch(len(rows))),
        }
    elif context_ids is not None:
        offset = int(context_ids.shape[0])
        prefix = context_ids[None].expand(len(rows), -1)
        inputs = {
            "input_ids": torch.cat([prefix, ids], 1).to(device),
            "attention_mask": torch.cat([torch.ones_like(prefix), mask], 1).to(device),
        }
    else:
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}

    # Target positions of each unique row (logits at p-1 .. p+T-2 predict the T target tokens).
    t_max = max(r.target_length for r in rows)
    wanted = sorted({r.prompt_length - 1 + t for r in rows for t in range(r.target_length)})
    where = {pos: k for k, pos in enumerate(wanted)}
    gather_idx = torch.zeros((len(rows), t_max), dtype=torch.long)
    for j, r in enumerate(rows):
        gather_idx[j, : r.target_length] = torch.tensor(
            [where[r.prompt_length - 1 + t] for t in range(r.target_length)]
        )
    positions = torch.tensor(wanted, dtype=torch.long, device=device) + offset
    logits = logits_at(model, positions, **inputs)
    vocab = logits.shape[-1]
    selected = logits.gather(1, gather_idx.to(device)[..., None].expand(-1, -1, vocab))  # [b, t_max, V]

    # Expand to the original rows sharing each input and score with the shared token helpers.
    members = [(j, row) for j, u in enumerate(chunk) for row in rows_of_unique[u]]
    local = torch.tensor([j for j, _ in members], device=device)
    originals = [row for _, row in members]
    labels = torch.full((len(members), t_max), -100, dtype=torch.long)
    for m, row in enumerate(originals):
        r = unique_rows[chunk[members[m][0]]]
        start = r.prompt_length - 1
        labels[m, : r.target_length] = batch.labels[row, start : start + r.target_length]
    compact = PromptTargetBatch(  # a view holding only the target positions, in target order
        input_ids=labels.clamp(min=0).to(device),
        attention_mask=(labels != -100).long().to(device),
        labels=labels.to(device),
        prompt_lengths=[1] * len(members),
        target_lengths=[int((labels[m] != -100).sum()) for m in range(len(members))],
    )
    row_logits = selected.index_select(0, local)
    total, mean = target_log_probs(row_logits, compact)
    row_hits = target_argmax_hits(row_logits, compact).sum(-1)
    index = torch.tensor(originals)
    sum_lp[index] = total.to("cpu", torch.float64)
    mean_lp[index] = mean.to("cpu", torch.float64)
    hits[index] = row_hits.to("cpu")
