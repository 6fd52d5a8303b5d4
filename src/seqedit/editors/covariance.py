"""Second-moment statistics of the keys of edited projections, with a content-addressed cache.

Locate-and-edit methods protect what a matrix already does through ``C = E[k kᵀ]``, the uncentred second
moment of the inputs ``k`` of the edited projection (the MLP out-projection) over the tokens of a text
corpus. ROME and MEMIT use 100,000 Wikipedia samples; ENCORE and AlphaEdit's Llama-3 settings use 10,000.
On a laptop CPU the default here is a few hundred WikiText-2 paragraphs (tens of thousands of tokens);
the sample count is a setting.

* **One pass for all layers.** The keys of every requested layer are collected in the same forward pass,
  which stops right after the highest requested layer (``hooks.stop_after``).
* **Token budget.** Batches are bounded by a number of (padded) tokens, not by the context length.
* **Cache by content.** A result is stored as safetensors under ``Settings.stats_cache`` and found again
  by a key made of: the model's name, a fingerprint of the weights that determine the keys, layer, site,
  corpus name and hash, sample count, maximum length and dtype (:class:`StatsKey`).
* **Resumable.** Partial sums are saved atomically every ``checkpoint_seconds``; an interrupted
  accumulation continues where it stopped.

The weight fingerprint covers the input embedding and every parameter of blocks ``0..layer`` *except the
MLP out-projections* (the only matrices locate-and-edit methods change). So the statistics of the original
model are found again throughout a sequential editing run -- the papers' convention, where ``C`` always
describes the unedited model -- while a different checkpoint or a fine-tuned model gets its own. Each
tensor contributes its name, shape, dtype and a strided sample of at most 4,096 values, so fingerprinting
costs the same for a 135M and an 8B model.

Corpus: ``wikitext2`` (the default; explicitly ``wikitext2:test``) reads ``text/wikitext2-test.txt`` from the
data directory (``SEQEDIT_DATA_DIR``) through :mod:`seqedit.data.corpora`; ``wikitext2:valid`` reads the
valid split. Without a data directory it falls back to ``builtin-prose``, real English prose shipped with the package (Jane Austen, about 56,000 SmolLM2 tokens; ``seqedit.data.prose``), and marks the
result as a fallback. Its samples are passages of consecutive paragraphs of about 800 characters, close to
the length of a WikiText-2 paragraph. ``generated`` (text the model samples from sentence openings of the
small ``builtin`` text, cached per model) is still available by name; it costs minutes of sampling on a CPU.
The ``builtin`` text alone (about 1,500 tokens) is too short: with fewer tokens than the key dimension ``C``
is singular and a MEMIT update in its null space is unbounded (measured: ‖W‖ ×269 after 6 edits on
SmolLM2). A warning is raised whenever ``C`` averages over fewer than twice as many tokens as it has
dimensions. Any ``.txt`` file path works too (paragraphs separated by blank lines, or one per line).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from seqedit.data.corpora import BUILTIN_TEXT, Corpus, builtin_text, split_paragraphs, statistics_corpus
from seqedit.data.corpora import builtin_corpus as builtin_corpus
from seqedit.data.corpora import builtin_prose_corpus as builtin_prose_corpus
from seqedit.editors.keys import pad_rows
from seqedit.editors.solvers import solve_device
from seqedit.models import hooks
from seqedit.models.loading import LoadedModel
from seqedit.settings import get_settings
from seqedit.utils.hashing import sha256_text, tensor_digest
from seqedit.utils.io import load_tensors, save_tensors_atomic, write_text_atomic
from seqedit.utils.paths import safe_path_component
from seqedit.utils.progress import note, progress_allowed
from seqedit.utils.torch_utils import resolve_dtype

DEFAULT_CORPUS = "wikitext2"
BUILTIN_CORPUS = BUILTIN_TEXT
GENERATED_CORPUS = "generated"
GENERATED_SAMPLES = 48  # continuations sampled from the model (the fallback corpus)
GENERATED_TOKENS = 192  # new tokens per continuation
GENERATED_BATCH = 16
SITE = "mlp.out_proj.input"
# Bump when the way samples are chosen or tokenised changes, so old cache entries are not reused.
SAMPLER_VERSION = "paragraphs-shuffled-seed0-v1"
_FINGERPRINT_VALUES = 4096


# ---------------------------------------------------------------------------------------------- corpus
# The text itself comes through the data layer (seqedit.data.corpora), whose names stay importable here.


def sentence_openings(text: str, words: int = 5) -> list[str]:
    """The first ``words`` words of every sentence of ``text`` (prompts for the generated corpus)."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return [" ".join(s.split()[:words]) for s in sentences if len(s.split()) > words]


@torch.no_grad()
def generated_corpus(
    lm: LoadedModel,
    *,
    n_samples: int = GENERATED_SAMPLES,
    new_tokens: int = GENERATED_TOKENS,
    seed: int = 0,
    cache_dir: Path | None = None,
    fallback: bool = False,
    progress: bool = True,
) -> Corpus:
    """Continuations the model samples from sentence openings of the shipped text, made once per model
    (keyed by the same weight fingerprint as the statistics) and cached as a text file."""
    from tqdm.auto import tqdm

    fingerprint = weights_fingerprint(lm, lm.adapter.num_layers - 1)
    stats_dir = (cache_dir or get_settings().stats_cache) / _safe_model_name(lm.name)
    path = stats_dir / f"generated-{fingerprint}-{n_samples}x{new_tokens}-seed{seed}.txt"
    if not path.exists():
        openings = sentence_openings(builtin_text())
        rng = random.Random(seed)
        prompts = rng.sample(openings, n_samples) if n_samples <= len(openings) else rng.choices(openings, k=n_samples)
        tokenizer = lm.tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        texts: list[str] = []
        devices = [lm.device] if lm.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):  # leave the caller's random streams untouched
                torch.manual_seed(seed)
                note("generating statistics text")
                for start in tqdm(range(0, n_samples, GENERATED_BATCH), desc="generating statistics text",
                                  disable=not progress_allowed(progress)):
                    chunk = prompts[start : start + GENERATED_BATCH]
                    batch = tokenizer(chunk, return_tensors="pt", padding=True).to(lm.device)
                    out = lm.generator.generate(
                        **batch, do_sample=True, top_p=0.95, temperature=1.0, max_new_tokens=new_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                    texts += [str(tokenizer.decode(row, skip_special_tokens=True)) for row in out]
        finally:
            tokenizer.padding_side = side
        body = "\n\n".join(" ".join(t.split()) for t in texts if t.strip())
        write_text_atomic(path, body + "\n")
    text = path.read_text(encoding="utf-8")
    return Corpus(GENERATED_CORPUS, str(path), sha256_text(text), tuple(split_paragraphs(text)), fallback, GENERATED_CORPUS)


def load_corpus(name_or_path: str = DEFAULT_CORPUS, lm: LoadedModel | None = None) -> Corpus:
    """Resolve a corpus by split name (``wikitext2:test``, ``wikitext2:valid``; a bare ``wikitext2`` is the
    test split), ``builtin-prose``, ``generated``, ``builtin`` or ``.txt`` path (see
    :func:`seqedit.data.corpora.statistics_corpus`). ``generated`` needs the model ``lm``. WikiText-2 without a
    data directory falls back to ``builtin-prose``."""
    if name_or_path == GENERATED_CORPUS:
        if lm is None:
            raise ValueError("the 'generated' covariance corpus is sampled from the model: pass lm")
        return generated_corpus(lm)
    return statistics_corpus(name_or_path)


# ---------------------------------------------------------------------------------------------- cache key
def weights_fingerprint(lm: LoadedModel, layer: int) -> str:
    """Fingerprint of the weights that determine the keys at ``layer``, MLP out-projections excluded."""
    adapter = lm.adapter
    excluded = {f"{adapter.mlp_out_proj(i)}." for i in range(adapter.num_layers)}
    prefixes = [f"{adapter.block(i)}." for i in range(layer + 1)]
    embed = f"{adapter.embed()}."
    digests: list[str] = []
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            wanted = name.startswith(embed) or any(name.startswith(p) for p in prefixes)
            if not wanted or any(name.startswith(e) for e in excluded):
                continue
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // _FINGERPRINT_VALUES)
            sample = flat[::step][:_FINGERPRINT_VALUES].to(torch.float64)
            digests.append(f"{name}:{tuple(param.shape)}:{param.dtype}:{tensor_digest(sample)}")
    return sha256_text("\n".join(digests))[:16]


@dataclass(frozen=True)
class StatsKey:
    """Everything the statistics depend on; its hash names the cache file."""

    model: str
    weights: str
    layer: int
    site: str
    corpus: str
    corpus_sha256: str
    n_samples: int
    max_length: int
    dtype: str
    sampler: str = SAMPLER_VERSION

    def digest(self) -> str:
        return sha256_text(json.dumps(asdict(self), sort_keys=True))[:20]

    def filename(self) -> str:
        return f"l{self.layer:03d}-{self.digest()}.safetensors"


def _safe_model_name(name: str) -> str:
    return safe_path_component(name)


@dataclass
class SecondMoment:
    """``E[k kᵀ]`` at one layer (float32, CPU) with the number of tokens it averages over."""

    layer: int
    moment: torch.Tensor
    tokens: int
    key: StatsKey
    corpus: dict[str, Any]
    from_cache: bool


# ---------------------------------------------------------------------------------------------- compute
def _select_samples(corpus: Corpus, n_samples: int) -> list[str]:
    return corpus.sample(n_samples)


def _token_batches(token_lists: Sequence[list[int]], token_budget: int) -> list[list[int]]:
    """Group sample indices (longest first) so that rows x padded width stays within the budget."""
    order = sorted(range(len(token_lists)), key=lambda i: (-len(token_lists[i]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    for idx in order:
        width = len(token_lists[current[0]]) if current else len(token_lists[idx])
        if current and (len(current) + 1) * width > token_budget:
            batches.append(current)
            current = []
        current.append(idx)
    if current:
        batches.append(current)
    return batches


class _PartialSums:
    """Running sums for a group of layers, saved atomically so an interrupted run resumes."""

    def __init__(self, path: Path, layers: list[int], dim: int, device: torch.device) -> None:
        self.path = path
        self.layers = layers
        self.sums = {layer: torch.zeros(dim, dim, dtype=torch.float64, device=device) for layer in layers}
        self.tokens = 0
        self.batches_done = 0

    def try_resume(self) -> bool:
        if not self.path.exists():
            return False
        try:
            saved = load_tensors(self.path)
            for layer in self.layers:
                self.sums[layer].copy_(saved[f"sum.{layer}"])
            self.tokens = int(saved["tokens"].item())
            self.batches_done = int(saved["batches_done"].item())
        except (KeyError, RuntimeError, OSError):
            return False  # unreadable or from another layer set: start over
        return True

    def save(self) -> None:
        tensors = {f"sum.{layer}": s for layer, s in self.sums.items()}
        tensors["tokens"] = torch.tensor([self.tokens], dtype=torch.int64)
        tensors["batches_done"] = torch.tensor([self.batches_done], dtype=torch.int64)
        save_tensors_atomic(self.path, tensors)


@torch.no_grad()
def second_moments(
    lm: LoadedModel,
    layers: Sequence[int],
    *,
    corpus: str | Corpus = DEFAULT_CORPUS,
    n_samples: int = 300,
    max_length: int = 256,
    dtype: str = "float32",
    token_budget: int = 4096,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    checkpoint_seconds: float = 60.0,
    progress: bool = True,
) -> dict[int, SecondMoment]:
    """``E[k kᵀ]`` of the MLP out-projection inputs at each of ``layers`` (cached; one pass for all)."""
    if n_samples < 1 or max_length < 2 or token_budget < max_length:
        raise ValueError(
            f"need n_samples >= 1, max_length >= 2 and token_budget >= max_length "
            f"(got {n_samples}, {max_length}, {token_budget})"
        )
    adapter = lm.adapter
    layers = sorted({adapter.num_layers + layer if layer < 0 else layer for layer in layers})
    text = corpus if isinstance(corpus, Corpus) else load_corpus(corpus, lm)
    stats_dir = (cache_dir or get_settings().stats_cache) / _safe_model_name(lm.name)
    keys = {
        layer: StatsKey(
            model=lm.name,
            weights=weights_fingerprint(lm, layer),
            layer=layer,
            site=SITE,
            corpus=text.name,
            corpus_sha256=text.sha256,
            n_samples=n_samples,
            max_length=max_length,
            dtype=dtype,
        )
        for layer in layers
    }
    results: dict[int, SecondMoment] = {}
    for layer, key in keys.items():
        path = stats_dir / key.filename()
        if use_cache and path.exists():
            saved = load_tensors(path)
            results[layer] = SecondMoment(layer, saved["moment"], int(saved["tokens"].item()), key, text.describe(), True)
    missing = [layer for layer in layers if layer not in results]
    if missing:
        results.update(
            _accumulate(
                lm, missing, keys, text, n_samples, max_length, resolve_dtype(dtype), token_budget,
                stats_dir, use_cache, checkpoint_seconds, progress,
            )
        )
    dim = adapter.mlp_hidden_size
    thin = sorted(layer for layer, m in results.items() if m.tokens < 2 * dim)
    if thin:
        warnings.warn(
            f"E[kkᵀ] at layers {thin} averages over {results[thin[0]].tokens} tokens, fewer than twice its "
            f"dimension ({dim}): the matrix is (nearly) singular and unconstrained updates can be huge. "
            "Use more samples or a larger corpus (mom2_n_samples, mom2_corpus).",
            stacklevel=2,
        )
    return results


def _accumulate(
    lm: LoadedModel,
    layers: list[int],
    keys: dict[int, StatsKey],
    text: Corpus,
    n_samples: int,
    max_length: int,
    dtype: torch.dtype,
    token_budget: int,
    stats_dir: Path,
    use_cache: bool,
    checkpoint_seconds: float,
    progress: bool,
) -> dict[int, SecondMoment]:
    from tqdm.auto import tqdm

    adapter, tokenizer, device = lm.adapter, lm.tokenizer, lm.device
    samples = _select_samples(text, n_samples)
    token_lists = [list(tokenizer(s)["input_ids"])[:max_length] for s in samples]
    token_lists = [t for t in token_lists if len(t) >= 2]
    if not token_lists:
        raise ValueError(f"corpus '{text.name}' yields no sample of at least two tokens")
    batches = _token_batches(token_lists, token_budget)
    dim = adapter.mlp_hidden_size
    group = sha256_text("|".join([*(keys[layer].digest() for layer in layers), str(token_budget)]))[:20]
    # float64 sums live where float64 works (not on MPS); the kᵀk products run on the model's device.
    sum_device = solve_device(device)
    partial = _PartialSums(stats_dir / f"partial-{group}.safetensors", layers, dim, sum_device)
    if use_cache:
        partial.try_resume()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    modules = {str(layer): adapter.module(adapter.mlp_out_proj(layer)) for layer in layers}
    last = adapter.module(adapter.mlp_out_proj(max(layers)))
    total_tokens = sum(len(t) for t in token_lists)
    done_tokens = sum(len(token_lists[i]) for b in batches[: partial.batches_done] for i in b)
    last_save = time.monotonic()
    what = f"key statistics, layers {','.join(map(str, layers))}"
    note(f"{what} ({total_tokens:,} tokens of {text.name})")
    bar = tqdm(total=total_tokens, initial=done_tokens, unit="tok", disable=not progress_allowed(progress), desc=what)
    was_training = lm.model.training
    lm.model.eval()
    try:
        for b_index in range(partial.batches_done, len(batches)):
            rows = [token_lists[i] for i in batches[b_index]]
            ids, mask = pad_rows(rows, pad_id, device)
            with hooks.capture(modules, "input") as store, hooks.stop_after(last):
                with contextlib.suppress(hooks.StopForward):
                    lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
            real = mask.bool()
            for layer in layers:
                k = store[str(layer)][real]
                k = k.to(device=sum_device, dtype=dtype) if dtype == torch.float64 else k.to(dtype)
                partial.sums[layer] += (k.T @ k).to(device=sum_device, dtype=torch.float64)
            n_tok = int(real.sum().item())
            partial.tokens += n_tok
            partial.batches_done = b_index + 1
            bar.update(n_tok)
            if use_cache and time.monotonic() - last_save > checkpoint_seconds and b_index + 1 < len(batches):
                partial.save()
                last_save = time.monotonic()
    finally:
        bar.close()
        lm.model.train(was_training)
    results: dict[int, SecondMoment] = {}
    for layer in layers:
        moment = (partial.sums[layer] / partial.tokens).to(torch.float32).cpu()
        key = keys[layer]
        if use_cache:
            save_tensors_atomic(
                stats_dir / key.filename(),
                {"moment": moment, "tokens": torch.tensor([partial.tokens], dtype=torch.int64)},
                {"key": json.dumps(asdict(key)), "corpus": json.dumps(text.describe())},
            )
        results[layer] = SecondMoment(layer, moment, partial.tokens, key, text.describe(), False)
    if partial.path.exists():
        partial.path.unlink()
    return results
