"""Context prefixes for target optimisation and key averaging.

ROME and MEMIT average keys, and optimise target vectors, over the edit prompt preceded by a few short
text prefixes ("context templates") so the edit generalises beyond the exact prompt. The papers sample
these prefixes from the model being edited; a small model samples junk, so the default here is a fixed
set of readable prefixes. Every template holds ``{}`` where the (subject-marked) edit prompt goes; the
first template is always the bare prompt ``"{}"``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

import torch

from seqedit.models.cache_api import output_cache, with_cache
from seqedit.models.loading import LoadedModel

# Seed of the sampled context prefixes: fixed so that every run with the same model and settings edits with
# the same prefixes (the value itself is arbitrary; changing it changes the 'sampled'/'released' experiments).
CONTEXT_SEED = 0

ContextMode = Literal["fixed", "sampled", "released", "none"]

# Short, neutral, readable prefixes (written for this project). Five, as in MEMIT's default of five
# sampled prefixes of ten tokens.
FIXED_PREFIXES: tuple[str, ...] = (
    "The following is a short note.",
    "Here is something worth knowing.",
    "I read about this in a book.",
    "Because of this, people often say that.",
    "You may already know this fact.",
    "Therefore, it is widely accepted that.",
    "In the encyclopedia it is written.",
    "As the article explains.",
)
# Seeds of the sampled prefixes, as in MEMIT.
SAMPLE_SEEDS: tuple[str, ...] = ("The", "Therefore", "Because", "I", "You")
SUBJECT_SLOT = "{}"


@dataclass(frozen=True)
class ContextTemplates:
    """The templates used for one edit, with how they were made (recorded in ``EditResult.info``)."""

    templates: tuple[str, ...]
    mode: ContextMode

    def __post_init__(self) -> None:
        if not self.templates or self.templates[0] != SUBJECT_SLOT:
            raise ValueError("the first context template must be the bare prompt '{}'")
        for template in self.templates:
            if template.count(SUBJECT_SLOT) != 1:
                raise ValueError(f"context template must contain '{{}}' exactly once: {template!r}")

    def apply(self, template: str, relation_prompt: str) -> str:
        """Put a relation prompt (which itself marks the subject with ``{}``) into a template."""
        head, _, tail = template.partition(SUBJECT_SLOT)
        return head + relation_prompt + tail

    def describe(self) -> dict[str, object]:
        return {"mode": self.mode, "templates": list(self.templates)}


def fixed_context_templates(count: int = 5) -> ContextTemplates:
    if not 0 <= count <= len(FIXED_PREFIXES):
        raise ValueError(f"context count must be between 0 and {len(FIXED_PREFIXES)}, got {count}")
    prefixes = tuple(f"{p} {SUBJECT_SLOT}" for p in FIXED_PREFIXES[:count])
    return ContextTemplates((SUBJECT_SLOT, *prefixes), "fixed" if count else "none")


@torch.no_grad()
def sampled_context_templates(lm: LoadedModel, count: int = 5, length: int = 10, seed: int = CONTEXT_SEED) -> ContextTemplates:
    """Sample ``count`` prefixes of ``length`` tokens from the model itself (MEMIT's recipe)."""
    tokenizer = lm.tokenizer
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    prefixes: list[str] = []
    try:
        for i in range(count):
            start = SAMPLE_SEEDS[i % len(SAMPLE_SEEDS)]
            enc = tokenizer(start, return_tensors="pt").to(lm.device)
            out = lm.model.generate(  # type: ignore[operator]
                **enc,
                do_sample=True,
                top_k=5,
                max_new_tokens=length,
                pad_token_id=tokenizer.pad_token_id,
            )
            text = str(tokenizer.decode(out[0], skip_special_tokens=True))  # one sequence: one string
            # Braces would be read as format slots; the papers replace them with spaces as well.
            text = text.replace("{", " ").replace("}", " ").replace("\n", " ").strip()
            prefixes.append(f"{text}. {SUBJECT_SLOT}")
    finally:
        torch.random.set_rng_state(generator_state)
    return ContextTemplates((SUBJECT_SLOT, *prefixes), "sampled")


def _released_batch(lm: LoadedModel, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeds tokenised as the released code does (``tok(prompts, padding=True)``: special tokens
    included), right-padded."""
    tokenizer = lm.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [list(tokenizer(p)["input_ids"]) for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad if pad is not None else 0), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids.to(lm.device), mask.to(lm.device)


@torch.no_grad()
def released_context_samples(
    lm: LoadedModel, count: int = 5, length: int = 10, seed: int = CONTEXT_SEED, top_k: int = 5
) -> list[list[int]]:
    """Token ids of prefixes sampled as the released MEMIT/ENCORE code samples them
    (``get_context_templates`` with ``generate_fast``): the seeds in one right-padded batch, top-``top_k``
    sampling renormalised over those ``k`` tokens, one column at a time until every row holds ``length``
    tokens *in total* (seed and special tokens included; ``sampled`` mode generates ``length`` new ones).

    One deliberate difference: the attention mask covers every column so far. The released loop hands the
    model a one-column mask with the cache, which older transformers broadcast to the same thing and
    transformers 5 reads differently (docs/editors.md, "Reproducing the released code")."""
    prompts = [SAMPLE_SEEDS[i % len(SAMPLE_SEEDS)] for i in range(count)]
    ids, mask = _released_batch(lm, prompts)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        done = int(mask.sum(1).min())  # columns fed to the model so far (every row holds a token there)
        cache, start = None, 0
        while ids.shape[1] < length:
            kwargs = with_cache(lm.model, cache) if cache is not None else {"use_cache": True}
            out = lm.model(input_ids=ids[:, start:done], attention_mask=torch.ones_like(ids[:, :done]), **kwargs)
            cache, start = output_cache(out), done
            probs = torch.softmax(out.logits[:, -1, :].float(), dim=-1)
            top = probs.topk(top_k, dim=-1)
            chosen = top.indices.gather(1, torch.multinomial(top.values / top.values.sum(1, keepdim=True), 1))
            if done == ids.shape[1]:
                ids = torch.cat([ids, ids[:, -1:].clone()], dim=1)
                mask = torch.cat([mask, torch.zeros_like(mask[:, -1:])], dim=1)
            # Rows still inside their seed keep it (their sample is drawn and dropped, as in the released loop).
            free = mask[:, done] == 0
            ids[free, done] = chosen[free, 0]
            mask[free, done] = 1
            done += 1
    finally:
        torch.random.set_rng_state(generator_state)
    return [[int(t) for t in row] for row in ids.tolist()]


def released_context_templates(lm: LoadedModel, count: int = 5, length: int = 10, seed: int = CONTEXT_SEED) -> ContextTemplates:
    """The prefixes of :func:`released_context_samples`, decoded as the released code decodes them: special
    tokens kept, NFKD-normalised, blank lines joined, braces replaced by spaces, ". {}" appended."""
    prefixes = []
    for row in released_context_samples(lm, count, length, seed):
        text = unicodedata.normalize("NFKD", str(lm.tokenizer.decode(row))).replace("\n\n", " ")
        text = text.replace("<|endoftext|>", "").replace("{", " ").replace("}", " ")
        prefixes.append(f"{text}. {SUBJECT_SLOT}")
    return ContextTemplates((SUBJECT_SLOT, *prefixes), "released")


def make_context_templates(lm: LoadedModel, mode: ContextMode, count: int, length: int = 10) -> ContextTemplates:
    if mode == "none" or count == 0:
        return ContextTemplates((SUBJECT_SLOT,), "none")
    if mode == "fixed":
        return fixed_context_templates(count)
    if mode == "sampled":
        return sampled_context_templates(lm, count, length)
    if mode == "released":
        return released_context_templates(lm, count, length)
    raise ValueError(f"unknown context mode {mode!r}; choose 'fixed', 'sampled', 'released' or 'none'")
