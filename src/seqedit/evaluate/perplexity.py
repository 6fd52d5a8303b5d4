"""Token-level perplexity on held-out text with sliding windows.

The text is tokenised once and cut to ``max_tokens`` tokens. Windows of ``window`` tokens start every
``stride`` tokens (``stride < window``); each window scores only the tokens the previous window did not (the first window
scores all its tokens but the very first, which nothing predicts), so every token is scored exactly once
with up to ``window - stride`` tokens of extra left context -- the standard strided evaluation
(e.g. Hugging Face's perplexity guide). ``perplexity = exp(total NLL / scored tokens)``.

Cost: ``≈ max_tokens · window / stride`` token positions of forward passes; memory per batch
``batch_size × (stride + 1) × vocab`` logits (only the scored positions are materialised).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from seqedit.data import parse_split, read_split
from seqedit.evaluate.scoring import logits_at
from seqedit.models.loading import LoadedModel
from seqedit.utils.rows import CheckpointRow, checkpoint_row


class PerplexityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    corpus: str = Field(
        "wikitext2-valid",
        description="Text split (wikitext2:valid, wikitext2:test, or the dataset names wikitext2-valid, "
        "wikitext2-test; a bare wikitext2 is the valid split) or a WikiText-style file.",
    )
    max_tokens: int = Field(
        4096, ge=2, description="Token budget: the first max_tokens tokens are evaluated."
    )
    window: int = Field(512, ge=2, description="Tokens per forward pass.")
    stride: int = Field(256, ge=1, description="Tokens between window starts (< window).")
    batch_size: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _stride_within_window(self) -> PerplexityConfig:
        if self.stride >= self.window:
            raise ValueError(f"stride ({self.stride}) must be smaller than window ({self.window})")
        return self


@dataclass(frozen=True)
class PerplexityResult:
    corpus: str
    perplexity: float
    nll_per_token: float
    n_tokens: int  # tokens evaluated (the first is context only)
    window: int
    stride: int

    def rows(self) -> list[CheckpointRow]:
        definition = (
            f"token-level exp(mean NLL); window={self.window}, stride={self.stride}, tokens={self.n_tokens}"
        )
        return [
            checkpoint_row(
                "downstream", "perplexity", self.perplexity, scope=self.corpus, definition=definition
            )
        ]


@dataclass(frozen=True)
class _Window:
    begin: int
    end: int
    n_scored: int  # the last n_scored tokens of the window are scored


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[_Window]:
    """Windows covering tokens 1..n-1 exactly once, each scoring the tokens new to it."""
    if n_tokens < 2:
        raise ValueError("perplexity needs at least two tokens")
    if not 1 <= stride < window:
        # stride == window would leave each window's first token without context to predict it
        raise ValueError(f"need 1 <= stride < window, got stride={stride}, window={window}")
    windows: list[_Window] = []
    previous_end = 1  # token 0 is never scored
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        n_scored = end - previous_end
        if n_scored > 0:
            windows.append(_Window(begin, end, n_scored))
        previous_end = end
        if end == n_tokens:
            break
    return windows


@torch.no_grad()
def token_nll(
    lm: LoadedModel,
    ids: torch.Tensor,
    *,
    window: int,
    stride: int,
    batch_size: int = 4,
    show_progress: bool = False,
) -> tuple[float, int]:
    """Total NLL (nats, float64) and number of scored tokens of the 1-D token sequence ``ids``."""
    windows = sliding_windows(int(ids.shape[0]), window, stride)
    groups: dict[tuple[int, int], list[_Window]] = {}
    for w in windows:  # equal shapes batch together: the first, the regular ones, the last
        groups.setdefault((w.end - w.begin, w.n_scored), []).append(w)
    device = lm.device
    total, count = 0.0, 0
    batches = [
        (length, n_scored, members[i : i + batch_size])
        for (length, n_scored), members in groups.items()
        for i in range(0, len(members), batch_size)
    ]
    for length, n_scored, members in tqdm(batches, desc="perplexity", disable=not show_progress, leave=False):
        inputs = torch.stack([ids[w.begin : w.end] for w in members]).to(device)
        # logits at positions length-n_scored-1 .. length-2 predict the last n_scored tokens
        positions = torch.arange(length - n_scored - 1, length - 1, device=device)
        predicted = logits_at(
            lm.model, positions, input_ids=inputs, attention_mask=torch.ones_like(inputs)
        ).float()
        targets = inputs[:, length - n_scored :]
        nll = torch.nn.functional.cross_entropy(
            predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        total += float(nll.double())
        count += targets.numel()
    return total, count


def tokenize_budget(lm: LoadedModel, text: str, max_tokens: int) -> torch.Tensor:
    """The first ``max_tokens`` tokens of ``text``, tokenising only as much text as needed."""
    chars = max_tokens * 8
    while True:
        ids = lm.tokenizer(text[:chars])["input_ids"]
        if len(ids) > max_tokens or chars >= len(text):
            return torch.tensor(ids[:max_tokens], dtype=torch.long)
        chars *= 2


def perplexity(
    lm: LoadedModel,
    text: str,
    config: PerplexityConfig | None = None,
    *,
    corpus: str | None = None,
    show_progress: bool = False,
) -> PerplexityResult:
    config = config or PerplexityConfig()
    ids = tokenize_budget(lm, text, config.max_tokens)
    nll, count = token_nll(
        lm,
        ids,
        window=config.window,
        stride=config.stride,
        batch_size=config.batch_size,
        show_progress=show_progress,
    )
    mean = nll / count
    return PerplexityResult(
        corpus=corpus or config.corpus,
        perplexity=math.exp(mean),
        nll_per_token=mean,
        n_tokens=int(ids.shape[0]),
        window=config.window,
        stride=config.stride,
    )


class PerplexityEvaluator:
    """Perplexity on a fixed text split: its paragraphs (``seqedit.data.read_split``) joined by newlines, read
    once. ``split`` is the explicit split read (``wikitext2:valid``)."""

    def __init__(
        self,
        config: PerplexityConfig | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        text: str | None = None,
    ) -> None:
        self.config = config or PerplexityConfig()
        self.split = parse_split(self.config.corpus, "perplexity")
        self.text = text if text is not None else "\n".join(read_split(self.split, data_dir=data_dir))

    def evaluate(self, lm: LoadedModel, *, show_progress: bool = False) -> PerplexityResult:
        return perplexity(lm, self.text, self.config, show_progress=show_progress)
