"""Text splits by explicit name, the one place seqedit reads raw prose for its own use.

A text split is written ``corpus:split`` (``wikitext2:test``, ``wikitext2:valid``); the registered dataset
names ``wikitext2-test`` / ``wikitext2-valid``, the bundled ``builtin-prose`` and ``builtin`` texts and
WikiText-style ``.txt`` files are accepted too. The bare name ``wikitext2`` is ambiguous: each consumer
resolves it to its documented split (:data:`BARE_WIKITEXT_SPLIT`), which is the split it read before split
names existed, so configs and caches of earlier runs keep their meaning.

Which text each consumer reads by default:

============================  ==================  ==========================================================
consumer                      default             what is read
============================  ==================  ==========================================================
key statistics ``E[kkᵀ]``     ``wikitext2``       test split; ``mom2_n_samples`` paragraphs shuffled with
(``mom2_corpus``)             (= test)            seed 0 (:meth:`Corpus.sample`); builtin-prose without data
activation probes             ``wikitext2:valid``  ``probe.texts`` paragraphs drawn with the run's seed,
(``text.probes``)                                 disjoint from the statistics (checked); null: the test split
                                                  of earlier runs, overlapping the statistics (recorded)
perplexity                    ``wikitext2-valid``  the first ``perplexity_tokens`` tokens of the valid split
intervention training         ``wikitext2``       the whole valid split, cut into chunks (held-out loss:
(``data``)                    (= valid)           chunks of the same split kept out of training)
============================  ==================  ==========================================================

Two readers serve different needs. :func:`split_paragraphs` (``Corpus.samples``) drops headings and undoes
WikiText's ``@,@`` joiners so statistics see ordinary prose; :func:`read_split` keeps WikiText's text as
published (:func:`seqedit.data.text.read_wikitext`), so perplexities match published numbers.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from seqedit.data.prose import BUILTIN_PROSE, read_builtin_prose
from seqedit.data.registry import DATASETS, load_text, resolve_data_dir

WIKITEXT2 = "wikitext2"
WIKITEXT2_SPLITS = ("test", "valid")
BUILTIN_TEXT = "builtin"  # ~1,500 tokens of seqedit's own prose: sentence openings, tiny tests
Consumer = Literal["statistics", "probes", "perplexity", "intervention"]
# The split a bare "wikitext2" means to each consumer: what each read before split names existed (the
# statistics cache keys and intervention records of earlier runs depend on it). None: a split is required.
BARE_WIKITEXT_SPLIT: dict[Consumer, str | None] = {
    "statistics": "test",
    "probes": None,
    "perplexity": "valid",
    "intervention": "valid",
}
STATISTICS_SAMPLE_SEED = 0  # the statistics' shuffle (part of SAMPLER_VERSION in editors.covariance)


class TextOverlapError(ValueError):
    """Two consumers that must read different text (probes and statistics) share paragraphs."""


@dataclass(frozen=True)
class TextSplit:
    """One split of one corpus: ``TextSplit("wikitext2", "test")``; bundled texts and files have no split."""

    corpus: str
    split: str | None = None

    @property
    def name(self) -> str:
        """The explicit spelling, ``corpus:split``."""
        return f"{self.corpus}:{self.split}" if self.split else self.corpus

    @property
    def dataset(self) -> str:
        """The registered dataset name (``wikitext2-test``) or the file path."""
        return f"{self.corpus}-{self.split}" if self.split else self.corpus

    @property
    def is_wikitext(self) -> bool:
        return self.corpus == WIKITEXT2


def parse_split(spec: str, consumer: Consumer) -> TextSplit:
    """``wikitext2:test``, ``wikitext2-test``, bare ``wikitext2`` (the consumer's split), ``builtin-prose``,
    ``builtin`` or a file path, as a :class:`TextSplit`. ValueError for an unknown split or a bare name where
    the consumer requires a split."""
    text = spec.strip()
    corpus, colon, split = text.partition(":")
    if colon and corpus == WIKITEXT2:
        return _wikitext(split, spec)
    for name in WIKITEXT2_SPLITS:
        if text == f"{WIKITEXT2}-{name}":
            return TextSplit(WIKITEXT2, name)
    if text == WIKITEXT2:
        bare = BARE_WIKITEXT_SPLIT[consumer]
        if bare is None:
            raise ValueError(f"text '{spec}' for the {consumer}: name the split ({_wikitext_names()})")
        return TextSplit(WIKITEXT2, bare)
    return TextSplit(text)


def _wikitext(split: str, spec: str) -> TextSplit:
    if split not in WIKITEXT2_SPLITS:
        raise ValueError(f"text '{spec}': unknown WikiText-2 split '{split}'; use {_wikitext_names()}")
    return TextSplit(WIKITEXT2, split)


def _wikitext_names() -> str:
    return " or ".join(f"{WIKITEXT2}:{s}" for s in WIKITEXT2_SPLITS)


def read_split(split: TextSplit, *, data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The split's paragraphs as published (WikiText tokenisation kept; :func:`seqedit.data.load_text`)."""
    return load_text(split.dataset, data_dir=data_dir)


# ---------------------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Corpus:
    """A text corpus split into samples (paragraphs) for key statistics. ``name`` and ``sha256`` enter the
    statistics cache key, so ``name`` keeps the spelling earlier seqedit versions used (``wikitext2`` for the
    test split); ``split`` is the explicit split it was read from."""

    name: str
    source: str  # file path, or "package:<file>" for a bundled text
    sha256: str
    samples: tuple[str, ...]
    fallback: bool = False  # True when the requested corpus was unavailable and the built-in one is used
    split: str = ""  # explicit split name (TextSplit.name); "" for corpora made elsewhere (generated text)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split or self.name,
            "source": self.source,
            "sha256": self.sha256[:16],
            "paragraphs": len(self.samples),
            "fallback": self.fallback,
        }

    def sample(self, n_samples: int) -> list[str]:
        """The ``n_samples`` paragraphs key statistics average over: a seeded shuffle, then the first ones."""
        order = list(range(len(self.samples)))
        random.Random(STATISTICS_SAMPLE_SEED).shuffle(order)
        return [self.samples[i] for i in order[:n_samples]]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def detokenise_wikitext(line: str) -> str:
    """Undo WikiText's split number/hyphen tokens (``3 @,@ 000``) so the text reads like normal prose."""
    return re.sub(r" @(.)@ ", r"\1", line).strip()


def split_paragraphs(text: str, *, wikitext: bool = False) -> list[str]:
    """Samples of a text: WikiText lines without headings (detokenised), else blank-line separated blocks
    (whitespace collapsed), or lines when the text has no blank lines."""
    if wikitext:
        lines = (ln.strip() for ln in text.splitlines())
        return [detokenise_wikitext(ln) for ln in lines if ln and not ln.startswith("=")]
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text)]
    blocks = [" ".join(b.split()) for b in blocks if b]
    if len(blocks) <= 1:
        blocks = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return blocks


def builtin_text() -> str:
    """seqedit's own short prose (about 1,500 tokens)."""
    return files("seqedit.data").joinpath("prose", "builtin_corpus.txt").read_text(encoding="utf-8")


def builtin_prose_corpus(*, fallback: bool = False) -> Corpus:
    """The English prose sample shipped with seqedit, as passages (see :mod:`seqedit.data.prose`)."""
    passages = tuple(read_builtin_prose())
    digest = sha256_text("\n\n".join(passages))
    return Corpus(BUILTIN_PROSE, "package:data/prose/austen.txt", digest, passages, fallback, BUILTIN_PROSE)


def builtin_corpus(*, fallback: bool = False) -> Corpus:
    text = builtin_text()
    samples = tuple(split_paragraphs(text))
    return Corpus(BUILTIN_TEXT, "package:builtin_corpus.txt", sha256_text(text), samples, fallback, BUILTIN_TEXT)


def _legacy_name(split: TextSplit) -> str:
    """The corpus name earlier versions put into statistics cache keys: ``wikitext2`` (test), ``wikitext2-valid``."""
    return WIKITEXT2 if split.split == BARE_WIKITEXT_SPLIT["statistics"] else split.dataset


def statistics_corpus(spec: str, *, data_dir: str | os.PathLike[str] | None = None) -> Corpus:
    """The key-statistics corpus ``spec`` (see :func:`parse_split`; a bare ``wikitext2`` is the test split).
    WikiText-2 without its file falls back to ``builtin-prose`` with a warning, marked ``fallback``."""
    split = parse_split(spec, "statistics")
    if split.corpus == BUILTIN_PROSE:
        return builtin_prose_corpus()
    if split.corpus == BUILTIN_TEXT:
        return builtin_corpus()
    if split.is_wikitext:
        base = resolve_data_dir(data_dir)
        path = base / DATASETS[split.dataset].paths[0] if base else None
        if path is None or not path.is_file():
            where = f"{path} does not exist" if path else "SEQEDIT_DATA_DIR is not set"
            warnings.warn(
                f"key statistics: corpus '{spec}' is unavailable ({where}); using the built-in English "
                "prose sample (Jane Austen, ~56k tokens) instead.",
                stacklevel=3,
            )
            return builtin_prose_corpus(fallback=True)
        text = path.read_text(encoding="utf-8")
        samples = tuple(split_paragraphs(text, wikitext=True))
        return Corpus(_legacy_name(split), str(path), sha256_text(text), samples, split=split.name)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(
            f"unknown covariance corpus '{spec}': not one of "
            f"{sorted([_wikitext_names(), BUILTIN_PROSE, BUILTIN_TEXT])} and not an existing text file"
        )
    text = path.read_text(encoding="utf-8")
    samples = tuple(split_paragraphs(text))
    if not samples:
        raise ValueError(f"covariance corpus {path} contains no text")
    return Corpus(path.stem, str(path), sha256_text(text), samples, split=str(path))


# ---------------------------------------------------------------------------------------------- disjointness
_COMPARED_CHARS = 80


def _normalised(paragraph: str) -> str:
    return " ".join(detokenise_wikitext(paragraph).split())


def shared_paragraphs(texts: Sequence[str], statistics_sample: Sequence[str]) -> list[int]:
    """Indices of ``texts`` that are (the start of) a paragraph of ``statistics_sample``, compared after
    WikiText detokenisation, so the raw and the statistics reader of one file match."""
    sample = [_normalised(p) for p in statistics_sample]
    shared = []
    for index, text in enumerate(texts):
        # The start of the text only: a snippet cut inside "3 @,@ 000" would not detokenise at its end.
        start = _normalised(text)[:_COMPARED_CHARS]
        if start and any(p.startswith(start) for p in sample):
            shared.append(index)
    return shared


def check_disjoint(
    probes: TextSplit, probe_texts: Sequence[str], statistics: Corpus, n_samples: int
) -> None:
    """TextOverlapError when a probe text is a paragraph (or its start) of the statistics sample."""
    shared = shared_paragraphs(probe_texts, statistics.sample(n_samples))
    if shared:
        raise TextOverlapError(
            f"{len(shared)} of {len(probe_texts)} activation probe texts from '{probes.name}' are paragraphs of "
            f"the key-statistics sample ({n_samples} paragraphs of '{statistics.split or statistics.name}'): "
            "probe another split (e.g. text.probes: wikitext2:valid) or compute the statistics on another corpus"
        )
