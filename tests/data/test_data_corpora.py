"""Text splits by explicit name: what each spelling reads, the legacy meaning of a bare ``wikitext2`` per
consumer, and the check that probe texts share no paragraph with the key-statistics sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqedit.data.corpora import (
    TextOverlapError,
    TextSplit,
    check_disjoint,
    parse_split,
    read_split,
    shared_paragraphs,
    statistics_corpus,
)
from seqedit.monitor.probes import build_probe_set


def _wikitext(split: str, n: int) -> str:
    """A WikiText-style file whose paragraphs name their split (so a test sees which file was read)."""
    lines = [" = Article = ", ""]
    for i in range(n):
        lines += [f" The {split} paragraph {i} tells of 1 @,@ 200 ships , a harbour and a long winter "
                  f"in the north , where paragraph {i} of the {split} split ends with a full stop . ", ""]
    return "\n".join(lines)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    text = tmp_path / "text"
    text.mkdir()
    for split in ("test", "valid"):
        (text / f"wikitext2-{split}.txt").write_text(_wikitext(split, 30), encoding="utf-8")
    monkeypatch.setenv("SEQEDIT_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "consumer", "expected"),
    [
        ("wikitext2:test", "probes", TextSplit("wikitext2", "test")),
        ("wikitext2:valid", "statistics", TextSplit("wikitext2", "valid")),
        ("wikitext2-valid", "perplexity", TextSplit("wikitext2", "valid")),
        # the bare name keeps what each consumer read before split names existed
        ("wikitext2", "statistics", TextSplit("wikitext2", "test")),
        ("wikitext2", "intervention", TextSplit("wikitext2", "valid")),
        ("wikitext2", "perplexity", TextSplit("wikitext2", "valid")),
        ("builtin-prose", "statistics", TextSplit("builtin-prose")),
        ("my/file.txt", "perplexity", TextSplit("my/file.txt")),
    ],
)
def test_split_names(spec: str, consumer, expected: TextSplit) -> None:
    assert parse_split(spec, consumer) == expected


def test_split_names_refused() -> None:
    with pytest.raises(ValueError, match="name the split"):
        parse_split("wikitext2", "probes")  # probes have no legacy meaning for the bare name
    with pytest.raises(ValueError, match="unknown WikiText-2 split 'train'"):
        parse_split("wikitext2:train", "statistics")
    assert TextSplit("wikitext2", "valid").name == "wikitext2:valid"
    assert TextSplit("wikitext2", "valid").dataset == "wikitext2-valid"


def test_each_split_reads_its_own_file(data_dir: Path) -> None:
    test, valid = read_split(TextSplit("wikitext2", "test")), read_split(TextSplit("wikitext2", "valid"))
    assert len(test) == len(valid) == 30
    assert all(" test " in p for p in test) and all(" valid " in p for p in valid)
    assert "1 @,@ 200" in test[0]  # published tokenisation kept (perplexity, probes)


def test_statistics_corpus_keeps_its_cache_name(data_dir: Path) -> None:
    bare, explicit = statistics_corpus("wikitext2"), statistics_corpus("wikitext2:test")
    # The cache key holds name and sha256: the bare and the explicit spelling find the same statistics.
    assert (bare.name, bare.sha256, bare.samples) == (explicit.name, explicit.sha256, explicit.samples)
    assert bare.name == "wikitext2" and bare.split == "wikitext2:test" and not bare.fallback
    assert bare.samples[0].startswith("The test paragraph 0 tells of 1,200 ships")  # detokenised
    valid = statistics_corpus("wikitext2:valid")
    assert valid.name == "wikitext2-valid" and valid.sha256 != bare.sha256
    assert valid.describe()["split"] == "wikitext2:valid"


def test_statistics_without_data_fall_back_to_prose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    with pytest.warns(UserWarning, match="wikitext2:test' is unavailable"):
        corpus = statistics_corpus("wikitext2:test")
    assert corpus.name == "builtin-prose" and corpus.fallback


def test_sample_is_a_seeded_subset(data_dir: Path) -> None:
    corpus = statistics_corpus("wikitext2")
    sample = corpus.sample(10)
    assert sample == corpus.sample(10) and len(set(sample)) == 10
    assert set(sample) < set(corpus.samples) and sample != list(corpus.samples[:10])


def test_probes_from_the_statistics_split_are_caught(data_dir: Path) -> None:
    corpus = statistics_corpus("wikitext2:test")
    n_samples = 20  # two thirds of the split
    for name, overlapping in (("wikitext2:test", True), ("wikitext2:valid", False)):
        split = parse_split(name, "probes")
        snippets = build_probe_set(read_split(split), n_snippets=8, n_prompts=0, seed=1, snippet_chars=60).texts
        shared = shared_paragraphs(snippets, corpus.sample(n_samples))
        # Raw snippets (WikiText tokenisation, cut at 60 characters) match detokenised statistics paragraphs.
        # (Seed 1: with seed 0 and equal paragraph counts Python's sample picks what its shuffle puts last.)
        expected = [i for i, s in enumerate(snippets) if any(p.startswith(s.replace(" @,@ ", ",")[:40])
                                                            for p in corpus.sample(n_samples))]
        assert shared == expected and bool(shared) == overlapping
        if overlapping:
            with pytest.raises(TextOverlapError, match=rf"{len(shared)} of 8 .* 'wikitext2:test'"):
                check_disjoint(split, snippets, corpus, n_samples)
        else:
            check_disjoint(split, snippets, corpus, n_samples)
    # A text outside the sample is not flagged, one inside is.
    outside = [p for p in corpus.samples if p not in corpus.sample(n_samples)]
    assert shared_paragraphs([outside[0], corpus.sample(n_samples)[3]], corpus.sample(n_samples)) == [1]
