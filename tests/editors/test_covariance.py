"""Key statistics: correct moments, one pass for all layers, cache by content, resumable accumulation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tolerances import assert_close_rel

from seqedit.data.prose import builtin_prose_path, read_builtin_prose
from seqedit.editors import covariance
from seqedit.editors.covariance import load_corpus, second_moments, split_paragraphs, weights_fingerprint
from seqedit.models import hooks

TEXT = "\n\n".join(
    f"Paragraph {i}: the {w} river flows past the old {w} mill, and children play near the water."
    for i, w in enumerate(["quiet", "broad", "green", "cold", "slow", "wide", "dark", "clear", "long", "deep"])
)


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _brute_force(lm, samples, layer, max_length):
    module = lm.adapter.module(lm.adapter.mlp_out_proj(layer))
    total, count = 0, 0
    for text in samples:
        ids = torch.tensor([lm.tokenizer(text)["input_ids"][:max_length]])
        with hooks.capture({"k": module}, "input") as store:
            lm.model(input_ids=ids)
        k = store["k"][0].double()
        total = total + k.T @ k
        count += k.shape[0]
    return total / count


def test_moments_match_brute_force_in_one_pass(tiny_llama, corpus_file, tmp_path):
    lm = tiny_llama
    calls = {"model": 0, "top_block": 0}
    h1 = lm.model.register_forward_pre_hook(lambda *_: calls.__setitem__("model", calls["model"] + 1))
    top = lm.adapter.module(lm.adapter.block(3))
    h2 = top.register_forward_pre_hook(lambda *_: calls.__setitem__("top_block", calls["top_block"] + 1))
    try:
        stats = second_moments(
            lm, [1, 2], corpus=str(corpus_file), n_samples=10, max_length=40, token_budget=120,
            cache_dir=tmp_path / "c", progress=False,
        )
    finally:
        h1.remove()
        h2.remove()
    samples = covariance._select_samples(load_corpus(str(corpus_file)), 10)
    for layer in (1, 2):
        expected = _brute_force(lm, samples, layer, 40)
        assert_close_rel(stats[layer].moment.double(), expected, rel=1e-5)
    # Several samples per batch (token budget), both layers from the same passes, nothing above layer 2 run.
    assert 1 < calls["model"] < 10
    assert calls["top_block"] == 0
    assert stats[1].tokens == sum(min(40, len(lm.tokenizer(s)["input_ids"])) for s in samples)


def test_cache_is_keyed_by_content(tiny_llama, corpus_file, tmp_path):
    lm, cache = tiny_llama, tmp_path / "c"
    first = second_moments(lm, [1], corpus=str(corpus_file), n_samples=5, cache_dir=cache, progress=False)[1]
    again = second_moments(lm, [1], corpus=str(corpus_file), n_samples=5, cache_dir=cache, progress=False)[1]
    assert not first.from_cache and again.from_cache
    assert torch.equal(first.moment, again.moment)
    other = second_moments(lm, [1], corpus=str(corpus_file), n_samples=6, cache_dir=cache, progress=False)[1]
    assert not other.from_cache and other.key.digest() != first.key.digest()
    files = list((cache / "tiny-llama").glob("l001-*.safetensors"))
    assert len(files) == 2


def test_fingerprint_ignores_edited_matrices_but_not_others(tiny_llama):
    lm = tiny_llama
    before = weights_fingerprint(lm, 2)
    with torch.no_grad():
        lm.adapter.module(lm.adapter.mlp_out_proj(1)).weight.add_(1.0)  # an edit
        assert weights_fingerprint(lm, 2) == before
        lm.adapter.module(lm.adapter.mlp_in_projs(2)[0]).weight.mul_(1.01)  # a different model
        assert weights_fingerprint(lm, 2) != before
        assert weights_fingerprint(lm, 1) != weights_fingerprint(lm, 2)


def test_interrupted_accumulation_resumes(tiny_llama, corpus_file, tmp_path, monkeypatch):
    lm, cache = tiny_llama, tmp_path / "c"
    kwargs = dict(corpus=str(corpus_file), n_samples=10, max_length=40, token_budget=80, progress=False)
    reference = second_moments(lm, [2], cache_dir=tmp_path / "ref", **kwargs)[2]

    seen = {"batches": 0}
    original = covariance.pad_rows

    def failing_pad_rows(*args, **kw):
        seen["batches"] += 1
        if seen["batches"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(covariance, "pad_rows", failing_pad_rows)
    with pytest.raises(KeyboardInterrupt):
        second_moments(lm, [2], cache_dir=cache, checkpoint_seconds=0.0, **kwargs)
    partials = list((cache / "tiny-llama").glob("partial-*.safetensors"))
    assert len(partials) == 1
    monkeypatch.setattr(covariance, "pad_rows", original)
    resumed = second_moments(lm, [2], cache_dir=cache, **kwargs)[2]
    assert resumed.tokens == reference.tokens
    assert_close_rel(resumed.moment, reference.moment, rel=1e-6)
    assert not list((cache / "tiny-llama").glob("partial-*.safetensors"))


def test_corpus_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    with pytest.warns(UserWarning, match="built-in English prose"):
        corpus = load_corpus("wikitext2")
    assert corpus.fallback and corpus.name == "builtin-prose"
    assert load_corpus("builtin").name == "builtin"
    with pytest.raises(ValueError, match="unknown covariance corpus"):
        load_corpus(str(tmp_path / "missing.txt"))
    assert split_paragraphs(" = Title = \n Some text @-@ here , 3 @,@ 000 .\n", wikitext=True) == [
        "Some text-here , 3,000 ."
    ]


def test_builtin_prose_is_real_text_in_passages_of_paragraph_length(tiny_llama):
    """The shipped sample: >= 40k tokens of English (SmolLM2's BPE gives ~1.3 tokens per word; the tiny
    models' byte tokenizer would count characters), passages near 800 characters, nothing dropped."""
    corpus = load_corpus("builtin-prose")
    words = sum(len(p.split()) for p in corpus.samples)
    assert words > 40_000 / 1.3
    lengths = sorted(len(p) for p in corpus.samples)
    assert 400 < lengths[len(lengths) // 2] <= 1200
    paragraphs = read_builtin_prose(passage_chars=None)
    assert "\n".join(corpus.samples) == "\n".join(paragraphs)  # passages are the paragraphs, regrouped
    assert load_corpus("builtin-prose").sha256 == corpus.sha256  # stable cache key
    assert paragraphs[0].startswith("Sir Walter Elliot, of Kellynch Hall")
    common = {"the", "and", "of", "to", "a", "in", "was", "her", "she", "he"}
    tokens = [w.strip(".,;:!?\"'").lower() for p in paragraphs for w in p.split()]
    assert sum(t in common for t in tokens) / len(tokens) > 0.15  # ordinary English function-word rate


def test_builtin_prose_is_a_registered_bundled_text_dataset(monkeypatch):
    from seqedit.data import describe_datasets, load_text

    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    info = {i.name: i for i in describe_datasets()}["builtin-prose"]
    assert info.found and info.kind == "text" and info.records == len(read_builtin_prose(passage_chars=None))
    assert "public domain" in info.licence
    assert load_text("builtin-prose", limit=1)[0].startswith("Sir Walter Elliot")
    notice = builtin_prose_path().with_name("NOTICE.md").read_text(encoding="utf-8")
    assert "public domain" in notice and "Julia Silge" in notice


def test_generated_corpus_is_sampled_from_the_model(monkeypatch, tmp_path, tiny_llama):
    monkeypatch.setenv("SEQEDIT_CACHE_DIR", str(tmp_path))
    corpus = load_corpus("generated", tiny_llama)
    assert corpus.name == "generated" and not corpus.fallback
    assert len(corpus.samples) == covariance.GENERATED_SAMPLES
    state = torch.random.get_rng_state()
    again = covariance.generated_corpus(tiny_llama)  # read back from the cache, same text
    assert again.sha256 == corpus.sha256
    assert torch.equal(state, torch.random.get_rng_state())  # generation left the caller's RNG alone
    with pytest.raises(ValueError, match="pass lm"):
        load_corpus("generated")


def test_too_few_tokens_warn_that_the_moment_is_singular(tmp_path, tiny_llama):
    short = tmp_path / "short.txt"
    short.write_text("A few words.\n\nNot many more.\n")
    with pytest.warns(UserWarning, match="singular"):
        second_moments(tiny_llama, [1], corpus=str(short), n_samples=2, cache_dir=tmp_path, progress=False)


def test_cache_key_of_existing_statistics_is_stable():
    """The key of a SmolLM2 layer-3 entry made before text splits were named (its file name in the shared
    statistics cache): a change of StatsKey's fields or of the corpus name would orphan every cached entry."""
    key = covariance.StatsKey(
        model="smollm2-135m", weights="4424b41252fff7d1", layer=3, site=covariance.SITE, corpus="wikitext2",
        corpus_sha256="d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        n_samples=300, max_length=256, dtype="float32",
    )
    assert key.filename() == "l003-82e5d859bffd352af56a.safetensors"
