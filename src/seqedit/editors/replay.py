"""Replaying the upper decoder blocks with a vector ``δ`` added at one MLP output: the machinery under the
target optimisation (:mod:`seqedit.editors.targets`).

One no-grad pass records the input of block ``L`` and the arguments of every block from ``L`` up (position
embeddings, attention masks ...); each replay then runs only those blocks, with ``δ`` added at the MLP
out-projection of ``L`` at chosen (row, token) pairs. Two replay modes give the same outputs:

- ``full`` (:class:`UpperStack`): every position of every row is recomputed, the reference;
- ``suffix`` (:class:`SuffixStack`): only the positions from each row's split point (the subject's last
  token, where ``δ`` enters) on, attending over the cached keys/values of the earlier positions.

:func:`build_stack` picks the suffix replay where it applies and says why when it falls back to the full one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, cast

import torch
from torch import nn
from transformers import DynamicCache, PretrainedConfig

from seqedit.models import hooks
from seqedit.models.adapters.base import ArchitectureAdapter
from seqedit.models.cache_api import with_cache
from seqedit.models.loading import LoadedModel

# How the upper blocks are replayed: every position, or only those from the split point on.
ReplayMode = Literal["full", "suffix"]

def _record_block_calls(
    lm: LoadedModel, blocks: Sequence[nn.Module], **forward_kwargs: Any
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Run the model (no grad, stopped after ``blocks[-1]``) and return each block's call arguments."""
    recorded: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def pre_hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        recorded.append((args, dict(kwargs)))

    handles = [b.register_forward_pre_hook(pre_hook, with_kwargs=True) for b in blocks]
    try:
        with torch.no_grad(), hooks.stop_after(blocks[-1]), contextlib.suppress(hooks.StopForward):
            lm.model(**forward_kwargs)
    finally:
        for handle in handles:
            handle.remove()
    if len(recorded) != len(blocks):
        raise RuntimeError(f"expected {len(blocks)} block calls, recorded {len(recorded)}")
    if not isinstance(recorded[0][0][0] if recorded[0][0] else None, torch.Tensor):
        raise TypeError("the first argument of a decoder block is not the hidden state")
    return recorded


class _BlockReplay:
    """Replays blocks ``layer..N-1`` from ``start`` with their recorded arguments ``calls``, with ``δ`` added
    at the MLP out-projection of ``layer``; subclasses record ``start``/``calls`` and say in
    :meth:`columns` where a token sits in the replayed outputs."""

    replay_mode: ClassVar[ReplayMode]
    start: torch.Tensor
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]]

    def __init__(self, lm: LoadedModel, layer: int) -> None:
        adapter = lm.adapter
        self.out_proj = adapter.module(adapter.mlp_out_proj(layer))
        self.blocks = [adapter.module(adapter.block(i)) for i in range(layer, adapter.num_layers)]

    def columns(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run(
        self, delta_rows: torch.Tensor | None, rows: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(output of block layer, final hidden)`` (columns as in :meth:`columns`); ``δ`` goes to
        token ``positions`` of ``rows``."""
        columns = self.columns(rows, positions)

        def inject(hidden: torch.Tensor) -> torch.Tensor:
            if delta_rows is None:
                return hidden
            return hidden + torch.zeros_like(hidden).index_put((rows, columns), delta_rows.to(hidden.dtype))

        hidden = self.start
        block_out = hidden
        for i, (block, (args, kwargs)) in enumerate(zip(self.blocks, self.calls, strict=True)):
            if i == 0:
                with hooks.edit_output(self.out_proj, inject):
                    hidden = ArchitectureAdapter.hidden_from_output(block(hidden, *args, **kwargs))
                block_out = hidden
            else:
                hidden = ArchitectureAdapter.hidden_from_output(block(hidden, *args, **kwargs))
        return block_out, hidden


class UpperStack(_BlockReplay):
    """Replays blocks ``layer..N-1`` on recorded inputs, with ``δ`` added at the MLP out-projection of
    ``layer`` at given (row, position) pairs; returns the final hidden states (before the final norm).

    This is the full replay (the reference): every position of every row is recomputed in each replay."""

    replay_mode: ClassVar[ReplayMode] = "full"

    def __init__(self, lm: LoadedModel, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        super().__init__(lm, layer)
        recorded = _record_block_calls(
            lm, self.blocks, input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        )
        self.start = recorded[0][0][0].detach()
        self.calls = [(args[1:], kwargs) for args, kwargs in recorded]

    def columns(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Where token ``positions`` of ``rows`` sit in the outputs of :meth:`run` (here: unchanged)."""
        return positions


class SuffixUnsupported(Exception):
    """The suffix-only replay cannot stand in for the full one here; the message says why."""


class _PrefixKeysValues:
    """Stands in for the transformers cache while the upper blocks are replayed: an attention layer's
    ``update`` returns the cached keys/values of the prefix followed by the fresh ones of the suffix and
    stores nothing, so every step starts from the same prefix and no graph outlives its step."""

    def __init__(self, keys: dict[int, torch.Tensor], values: dict[int, torch.Tensor]) -> None:
        self.keys = keys
        self.values = values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *_args: Any, **_kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.cat([self.keys[layer_idx], key_states], dim=-2),
            torch.cat([self.values[layer_idx], value_states], dim=-2),
        )


def sliding_window_of(lm: LoadedModel) -> int | None:
    """The model's attention window, if it has one (Gemma 2/3 local layers, Mistral)."""
    config = getattr(lm.model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    window = getattr(text_config, "sliding_window", None)
    return int(window) if isinstance(window, int) and window > 0 else None


class SuffixStack(_BlockReplay):
    """The same replay as :class:`UpperStack`, recomputing only the positions from each row's split point
    (the subject's last token, where ``δ`` enters) onwards.

    In a causal model no hidden state before the token where ``δ`` is added depends on ``δ``, at block
    ``layer`` or above. So one no-grad pass computes the keys and values of positions ``< split[r]`` of
    every row (``prefix``: the first ``P = max(split)`` positions, in a transformers ``DynamicCache``), and
    each replay runs blocks ``layer..N-1`` on the *suffix* only -- row ``r``'s tokens ``split[r]..`` moved
    to the front, right-padded to ``S`` columns -- attending over ``[cached prefix ; fresh suffix]``.

    Layout of the keys seen by the suffix: the ``P`` cached positions of the row (those at or after
    ``split[r]`` masked out by the 2-D attention mask), then the ``S`` suffix columns. Rotary and learned
    positions use each token's true position (explicit ``position_ids``); the attention masks, position
    embeddings and everything else the blocks take are recorded from one no-grad pass of the model on
    the suffix with the prefix cache, so the family's own code builds them (grouped-query attention,
    GPT-J/NeoX parallel blocks, Gemma's local layers included). In that layout the distance between a
    suffix token and a cached one can exceed the true distance by up to ``P - split[r]``, so models with
    an attention window shorter than ``P + S`` are refused (``SuffixUnsupported``) and use the full replay.
    """

    replay_mode: ClassVar[ReplayMode] = "suffix"

    def __init__(
        self,
        lm: LoadedModel,
        layer: int,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        split: torch.Tensor,
    ) -> None:
        super().__init__(lm, layer)
        self.split = split.to(device=input_ids.device, dtype=torch.long)
        lengths = attention_mask.sum(dim=1).long()
        if bool(((self.split < 0) | (self.split >= lengths)).any()):
            raise SuffixUnsupported("a split point lies outside its row")
        prefix = int(self.split.max())
        if prefix == 0:
            raise SuffixUnsupported("no row has a token before its subject's last token: nothing to cache")
        width = int((lengths - self.split).max())
        window = sliding_window_of(lm)
        # Exact while every query-key distance in the layout (at most prefix + width - 1) is inside the window.
        if window is not None and prefix + width > window:
            raise SuffixUnsupported(
                f"the attention window ({window}) is shorter than the suffix layout ({prefix} + {width} "
                "positions), where distances to cached positions exceed the true ones"
            )
        cache = DynamicCache(config=cast(PretrainedConfig, lm.model.config))
        _record_block_calls(
            lm,
            self.blocks,
            input_ids=input_ids[:, :prefix],
            attention_mask=attention_mask[:, :prefix],
            **with_cache(lm.model, cache),
        )
        cached = self._prefix_keys_values(cache, range(layer, lm.adapter.num_layers), int(input_ids.shape[0]), prefix)
        # The suffix layout: row r's tokens split[r] .. split[r] + width - 1 (right-padded).
        columns = torch.arange(width, device=input_ids.device)
        source = self.split[:, None] + columns[None, :]
        real = source < lengths[:, None]
        source = source.clamp(max=int(input_ids.shape[1]) - 1)
        before_split = torch.arange(prefix, device=input_ids.device)[None, :] < self.split[:, None]
        recorded = _record_block_calls(
            lm,
            self.blocks,
            input_ids=input_ids.gather(1, source),
            attention_mask=torch.cat([before_split, real], dim=1).to(attention_mask.dtype),
            position_ids=torch.where(real, source, self.split[:, None]),
            **with_cache(lm.model, cache),
        )
        self.start = recorded[0][0][0].detach()
        self.calls = [self._without_cache(args[1:], kwargs, cache, cached) for args, kwargs in recorded]

    @staticmethod
    def _prefix_keys_values(
        cache: Any, layers: range, batch: int, prefix: int
    ) -> _PrefixKeysValues:
        keys: dict[int, torch.Tensor] = {}
        values: dict[int, torch.Tensor] = {}
        cache_layers = getattr(cache, "layers", None)
        for layer in layers:
            entry = cache_layers[layer] if cache_layers is not None and layer < len(cache_layers) else None
            k, v = getattr(entry, "keys", None), getattr(entry, "values", None)
            if not (isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
                raise SuffixUnsupported(f"the model's cache holds no keys and values for layer {layer}")
            if k.dim() != 4 or k.shape[0] != batch or k.shape[-2] != prefix or v.shape[-2] != prefix:
                raise SuffixUnsupported(
                    f"the cache of layer {layer} does not hold the {prefix} prefix positions as [batch, heads, seq, dim]"
                )
            keys[layer], values[layer] = k, v
        return _PrefixKeysValues(keys, values)

    @staticmethod
    def _without_cache(
        args: tuple[Any, ...], kwargs: dict[str, Any], cache: Any, cached: _PrefixKeysValues
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The recorded call with the (mutable) cache replaced by the fixed prefix keys/values."""
        if not any(a is cache for a in args) and not any(v is cache for v in kwargs.values()):
            raise SuffixUnsupported("the decoder blocks are not handed the cache")
        return (
            tuple(cached if a is cache else a for a in args),
            {name: cached if value is cache else value for name, value in kwargs.items()},
        )

    def columns(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Where token ``positions`` of ``rows`` sit in the outputs of :meth:`run`."""
        columns = positions - self.split[rows]
        if bool((columns < 0).any()):
            raise ValueError("a position before its row's split point was asked of the suffix replay")
        return columns


def build_stack(
    lm: LoadedModel,
    layer: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    split: torch.Tensor,
    suffix_only: bool,
) -> tuple[UpperStack | SuffixStack, str | None]:
    """The suffix-only replay where it applies (``suffix_only``), else the full one; the second item is the
    reason of an automatic fallback (None when the suffix replay runs or was not asked for)."""
    if not suffix_only:
        return UpperStack(lm, layer, input_ids, attention_mask), None
    try:
        return SuffixStack(lm, layer, input_ids, attention_mask, split), None
    except SuffixUnsupported as why:
        return UpperStack(lm, layer, input_ids, attention_mask), str(why)


def lm_logits(lm: LoadedModel, final_hidden: torch.Tensor) -> torch.Tensor:
    """Final norm + LM head (+ logit soft-capping where the family uses it) on selected hidden states."""
    adapter = lm.adapter
    logits = adapter.module(adapter.lm_head())(adapter.module(adapter.final_norm())(final_hidden))
    cap = getattr(getattr(lm.model, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()
