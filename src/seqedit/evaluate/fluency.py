"""Fluency as n-gram entropy of generated text, as defined by ROME (Meng et al. 2022, §4.2 / App.).

ROME's ``compute_n_gram_entropy`` (``experiments/py/eval_utils_counterfact.py``): a text is split into
words, and for ``n`` in (2, 3) the Shannon entropy (bits) of its n-gram frequency distribution is
computed; the text's score is the *arithmetic mean* of the weighted entropies ``(2/3)·H₂`` and
``(4/3)·H₃``, i.e. ``(2/3·H₂ + 4/3·H₃) / 2``; a case's score is the mean over its generations, and the
reported number the mean over cases. Generations there are top-k sampled (k = 5) from each generation
prompt up to 100 tokens *including* the prompt, decoded in full (prompt included), NFKD-normalised
with blank lines joined. Repetitive, degenerate text has low entropy.

Differences from ROME, all deliberate: words come from a regex that approximates NLTK's Treebank
tokenizer (words, numbers and punctuation marks are separate tokens, contractions split at the
apostrophe) so no NLTK data download is needed; generation stops at the model's end-of-sequence token
instead of running past it; sampling is seeded, so a checkpoint's number is reproducible.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from seqedit.models.loading import LoadedModel

ROME_NGRAM_ORDERS: tuple[int, ...] = (2, 3)
ROME_NGRAM_WEIGHTS: tuple[float, ...] = (2 / 3, 4 / 3)
_WORD = re.compile(r"\w+(?:[-.]\w+)*|'\w+|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    """Words, numbers and punctuation marks of ``text`` (an approximation of ``nltk.word_tokenize``)."""
    return _WORD.findall(text)


def ngram_entropy(
    text: str,
    orders: Sequence[int] = ROME_NGRAM_ORDERS,
    weights: Sequence[float] = ROME_NGRAM_WEIGHTS,
) -> float:
    """ROME's weighted n-gram entropy (bits) of one text; 0 for a text with fewer words than an order."""
    if len(orders) != len(weights):
        raise ValueError("one weight per n-gram order is needed")
    words = word_tokens(text)
    weighted = []
    for n, weight in zip(orders, weights, strict=True):
        counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        weighted.append(weight * entropy)
    return sum(weighted) / len(weighted)


@dataclass(frozen=True)
class GenerationSettings:
    """How fluency generations are produced (ROME's defaults)."""

    max_length: int = 100  # tokens, prompt included
    top_k: int = 5
    do_sample: bool = True  # False: greedy decoding
    seed: int = 0
    batch_size: int = 16

    def describe(self) -> str:
        how = f"top{self.top_k}-sampling,seed={self.seed}" if self.do_sample else "greedy"
        return f"{how},max_length={self.max_length}"


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators inside the block and restore them afterwards."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def clean_generation(text: str) -> str:
    """ROME's post-processing of a decoded generation."""
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ")


@torch.no_grad()
def generate_texts(
    lm: LoadedModel, prompts: Sequence[str], settings: GenerationSettings, *, show_progress: bool = False
) -> list[str]:
    """Generate from each prompt; returns prompt + continuation, cleaned as ROME does."""
    tok, model, device = lm.tokenizer, lm.generator, lm.device
    encoded = [list(tok(p)["input_ids"]) for p in prompts]
    for p, prompt_ids in zip(prompts, encoded, strict=True):
        if not prompt_ids:
            raise ValueError(f"generation prompt {p!r} tokenises to nothing")
        if len(prompt_ids) >= settings.max_length:
            raise ValueError(
                f"generation prompt {p!r} is {len(prompt_ids)} tokens, max_length is {settings.max_length}"
            )
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    eos = tok.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    texts: list[str] = [""] * len(prompts)
    chunks = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    with seeded_rng(settings.seed, device):
        for chunk in tqdm(chunks, desc="fluency generation", disable=not show_progress, leave=False):
            rows = [encoded[i] for i in chunk]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, r in enumerate(rows):  # left padding: every row continues at the same position
                ids[j, width - len(r) :] = torch.tensor(r)
                mask[j, width - len(r) :] = 1
            config = GenerationConfig(
                max_new_tokens=settings.max_length - min(len(r) for r in rows),
                do_sample=settings.do_sample,
                top_k=settings.top_k if settings.do_sample else None,
                top_p=1.0 if settings.do_sample else None,
                temperature=1.0 if settings.do_sample else None,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
            for j, i in enumerate(chunk):
                budget = settings.max_length - len(rows[j])  # ROME: total length capped, prompt included
                continuation = out[j, width : width + budget].tolist()
                if eos is not None and eos in continuation:
                    continuation = continuation[: continuation.index(eos)]
                texts[i] = clean_generation(str(tok.decode(rows[j] + continuation, skip_special_tokens=True)))
    return texts


def fluency_entropy(
    lm: LoadedModel,
    prompts_per_case: Sequence[Sequence[str]],
    settings: GenerationSettings | None = None,
    *,
    show_progress: bool = False,
) -> tuple[float, list[list[str]]]:
    """Mean over cases of the mean n-gram entropy of each case's generations; returns the texts too."""
    settings = settings or GenerationSettings()
    cases = [list(p) for p in prompts_per_case if p]
    if not cases:
        raise ValueError("fluency needs at least one generation prompt")
    flat = [p for case in cases for p in case]
    texts = generate_texts(lm, flat, settings, show_progress=show_progress)
    grouped: list[list[str]] = []
    start = 0
    for case in cases:
        grouped.append(texts[start : start + len(case)])
        start += len(case)
    per_case = [sum(ngram_entropy(t) for t in g) / len(g) for g in grouped]
    return sum(per_case) / len(per_case), grouped
