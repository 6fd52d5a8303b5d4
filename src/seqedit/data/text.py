"""Plain-text corpora for perplexity / fluency checks (WikiText-2 as tokenised by its authors).

WikiText lines are paragraphs; ``= Title =`` lines start an article and ``= = Section = =`` lines head sections.
We drop blank and heading lines and keep the text otherwise untouched: the ``<unk>`` markers and the ``@-@``,
``@,@``, ``@.@`` joiners stay, so numbers match published WikiText perplexities; pass ``unk=`` to replace
``<unk>`` (e.g. with a tokenizer's unknown token) if a model should not see the literal string.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import Literal

from seqedit.data._load import read_utf8, window

TextUnit = Literal["paragraph", "article"]

_HEADING = re.compile(r"(= )+(?!=)(.*?)( =)+")
_UNK = "<unk>"


def read_wikitext(
    path: str | os.PathLike[str],
    *,
    unit: TextUnit = "paragraph",
    limit: int | None = None,
    offset: int = 0,
    max_chars: int | None = None,
    unk: str | None = None,
) -> list[str]:
    """Paragraphs (or whole articles, paragraphs joined by newlines) of a WikiText file.

    ``offset``/``limit`` select units; ``max_chars`` then caps the total length, cutting the last unit at a
    word boundary (so a perplexity run has a predictable cost).
    """
    lines = read_utf8(path).splitlines()
    units = list(_paragraphs(lines) if unit == "paragraph" else _articles(lines))
    chosen = [units[i] for i in window(len(units), offset, limit)]
    if unk is not None:
        chosen = [text.replace(_UNK, unk) for text in chosen]
    return chosen if max_chars is None else cap_chars(chosen, max_chars)


def _heading_level(line: str) -> int:
    """1 for an article title, 2+ for section headings, 0 for body text."""
    if not _HEADING.fullmatch(line):
        return 0
    return (len(line) - len(line.lstrip("= "))) // 2


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    for raw in lines:
        line = raw.strip()
        if line and not _heading_level(line):
            yield line


def _articles(lines: Iterable[str]) -> Iterator[str]:
    current: list[str] = []
    for raw in lines:
        line = raw.strip()
        if _heading_level(line) == 1 and current:
            yield "\n".join(current)
            current = []
        elif line and not _heading_level(line):
            current.append(line)
    if current:
        yield "\n".join(current)


def cap_chars(texts: Iterable[str], max_chars: int) -> list[str]:
    """Keep texts until ``max_chars`` characters are used; cut the last one at a space if it overflows."""
    if max_chars < 0:
        raise ValueError(f"max_chars must be >= 0, got {max_chars}")
    kept: list[str] = []
    budget = max_chars
    for text in texts:
        if len(text) <= budget:
            kept.append(text)
            budget -= len(text)
            continue
        cut = text[:budget].rsplit(" ", 1)[0] if " " in text[:budget] else text[:budget]
        if cut.strip():
            kept.append(cut.rstrip())
        break
    return kept
