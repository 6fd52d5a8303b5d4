"""Rebuild ``src/seqedit/data/prose/austen.txt``, the built-in English prose sample (``builtin-prose``).

The text comes from Debian's ``r-cran-janeaustenr`` package (Julia Silge's janeaustenr, MIT; the novels
themselves are in the public domain, transcribed by Project Gutenberg). Usage::

    apt-get download r-cran-janeaustenr && dpkg -x r-cran-janeaustenr_*.deb janeaustenr
    python scripts/make_builtin_prose.py janeaustenr/usr/lib/R/site-library/janeaustenr/data/Rdata

The R lazy-load database (``Rdata.rdb``) is a sequence of zlib-compressed R serialisations (XDR), one
character vector of lines per novel, in the order of the index (``Rdata.rdx``).
"""

from __future__ import annotations

import re
import struct
import sys
import zlib
from pathlib import Path

NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")
# Openings of two novels: Persuasion (narration) and Pride and Prejudice (dialogue), about 250 KB.
SELECTION = {"persuasion": 8, "prideprejudice": 14}  # novel -> number of chapters kept
OUT = Path(__file__).resolve().parents[1] / "src/seqedit/data/prose/austen.txt"


def _read_character_vector(blob: bytes) -> list[str]:
    """Decode an R XDR serialisation of a character vector (STRSXP of CHARSXPs)."""
    pos = 2  # "X\n"

    def next_int() -> int:
        nonlocal pos
        (value,) = struct.unpack(">i", blob[pos : pos + 4])
        pos += 4
        return value

    version = next_int()
    next_int(), next_int()  # writer and minimal reader versions
    if version == 3:
        skip = next_int()  # length of the native encoding name
        pos += skip
    if next_int() & 0xFF != 16:
        raise ValueError("not a character vector")
    lines = []
    for _ in range(next_int()):
        if next_int() & 0xFF != 9:
            raise ValueError("not a CHARSXP")
        length = next_int()
        lines.append("" if length < 0 else blob[pos : pos + length].decode("utf-8"))
        pos += max(length, 0)
    return lines


def read_novels(rdata: Path) -> dict[str, list[str]]:
    data = rdata.with_suffix(".rdb").read_bytes()
    vectors, pos = [], 0
    while pos < len(data):
        stream = zlib.decompressobj()
        vectors.append(_read_character_vector(stream.decompress(data[pos + 4 :])))
        pos = len(data) - len(stream.unused_data)
    return dict(zip(NOVELS, vectors, strict=True))


_CHAPTER = re.compile(r"^(chapter|volume)\s+[0-9ivxlc]+\.?$", re.IGNORECASE)


def chapters(lines: list[str]) -> list[list[str]]:
    """Paragraphs (hard-wrapped lines joined, italics underscores removed) per chapter."""
    found: list[list[str]] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph and found:
            found[-1].append(re.sub(r"_([^_]+)_", r"\1", " ".join(paragraph)))
        paragraph.clear()

    for raw in lines:
        line = " ".join(raw.split())
        if _CHAPTER.match(line):
            flush()
            found.append([])
        elif not line:
            flush()
        else:
            paragraph.append(line)
    flush()
    return found


def main(rdata: str) -> None:
    novels = read_novels(Path(rdata))
    parts = []
    for novel, count in SELECTION.items():
        for chapter in chapters(novels[novel])[:count]:
            parts.extend(chapter)
    OUT.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    print(f"{OUT}: {OUT.stat().st_size} bytes, {len(parts)} paragraphs, {sum(len(p.split()) for p in parts)} words")


if __name__ == "__main__":
    main(sys.argv[1])
