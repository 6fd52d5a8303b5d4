"""The built-in English prose sample (dataset name ``builtin-prose``): real text that ships with seqedit.

Key statistics (``E[kkᵀ]``) need tens of thousands of tokens of ordinary text. Without the research data
(WikiText-2), seqedit uses this sample: the openings of two novels by Jane Austen, *Persuasion* (1818,
chapters 1-8) and *Pride and Prejudice* (1813, chapters 1-14), about 43,600 words (56,000 SmolLM2 tokens,
244 KB). The novels are in the public domain; the transcription is Project Gutenberg's as packaged in Julia
Silge's janeaustenr (MIT) and Debian's ``r-cran-janeaustenr``; ``prose/NOTICE.md`` has the details and
``scripts/make_builtin_prose.py`` rebuilds the file.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

BUILTIN_PROSE = "builtin-prose"
PROSE_RESOURCE = ("prose", "austen.txt")
PROSE_CITATION = (
    "Jane Austen, Persuasion (1818, ch. 1-8) and Pride and Prejudice (1813, ch. 1-14); Project Gutenberg "
    "transcriptions via janeaustenr (J. Silge) and Debian r-cran-janeaustenr."
)
PROSE_LICENCE = "public domain (texts); MIT (janeaustenr packaging)"
# Consecutive paragraphs are joined into passages of about this many characters (~170 tokens), so that a
# sample is as long as a WikiText-2 paragraph, not a single line of dialogue.
PASSAGE_CHARS = 800


def builtin_prose_path() -> Path:
    """Where the prose file lies (inside the installed package)."""
    with as_file(files("seqedit.data").joinpath(*PROSE_RESOURCE)) as path:
        return Path(path)


def read_builtin_prose(*, passage_chars: int | None = PASSAGE_CHARS) -> list[str]:
    """The sample as passages of consecutive paragraphs (``passage_chars=None``: single paragraphs)."""
    text = builtin_prose_path().read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    return paragraphs if passage_chars is None else join_passages(paragraphs, passage_chars)


def join_passages(paragraphs: list[str], max_chars: int) -> list[str]:
    """Group consecutive paragraphs (newline-separated) until a group reaches ``max_chars``; a paragraph
    longer than that stays whole."""
    passages: list[str] = []
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        if current and size + len(paragraph) > max_chars:
            passages.append("\n".join(current))
            current, size = [], 0
        current.append(paragraph)
        size += len(paragraph) + 1
    if current:
        passages.append("\n".join(current))
    return passages
