"""The defaults table: which profile a model gets, and what the reproduction profile changes."""

from __future__ import annotations

import pytest

from seqedit.editors import create_editor, editor_class, make_config
from seqedit.editors.base import profile_choice
from seqedit.editors.context import SAMPLE_SEEDS, released_context_samples, sampled_context_templates
from seqedit.editors.locate import LocateEditEditor
from seqedit.editors.profiles import (
    LOCATE_AND_EDIT,
    PROFILES,
    RELEASED_FALLBACK,
    RELEASED_RECIPE,
    Profile,
    Setting,
    UnknownProfileError,
    choose_profile,
    profile_for_model,
)

LOCATE_METHODS = ["rome", "memit", "emmet", "alphaedit", "encore"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smollm2-135m", "smollm2"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"),
        ("/models/SmolLM2-135M/", "smollm2"),
        ("meta-llama/Meta-Llama-3-8B", "llama3-8b"),
        ("gpt2-xl", "gpt2-xl"),
    ],
)
def test_checkpoint_names_select_their_profile(name, expected):
    choice = profile_for_model(name, "llama")
    assert choice.base == expected and choice.matched_by == "checkpoint" and choice.notice is None


def test_an_unknown_model_gets_generic_defaults_with_a_notice_whatever_its_shape(tiny_llama):
    # A 32-layer Llama-family model used to receive Llama-3-8B's settings, a 30-layer one SmolLM2's.
    choice = profile_for_model("mistralai/Mistral-7B-v0.1", "mistral")
    assert choice.base == "generic" and choice.notice and "Mistral-7B" in choice.notice
    assert "\n" not in choice.notice
    assert profile_choice(tiny_llama).base == "generic"
    memit = make_config("memit", tiny_llama)
    assert memit.layers is None and memit.mom2_update_weight == 15000.0  # class defaults


def test_model_types_select_a_profile_when_no_checkpoint_does(monkeypatch):
    family = Profile("tinyfam", "test", {LOCATE_AND_EDIT: {"mom2_update_weight": Setting(7.0, "test")}},
                     model_types=("llama",))
    monkeypatch.setitem(PROFILES, family.name, family)
    assert profile_for_model("HuggingFaceTB/SmolLM2-135M", "llama").base == "smollm2"  # checkpoint first
    choice = profile_for_model("some/llama", "llama")
    assert choice.base == "tinyfam" and choice.matched_by == "model type"


def test_explicit_profiles_and_unknown_names(tiny_llama):
    assert make_config("memit", tiny_llama, profile="smollm2").mom2_update_weight == 5000.0
    assert make_config("alphaedit", None, profile="smollm2").nullspace_threshold == 1e-2
    assert make_config("ft-l", None, profile="smollm2").lr == 5e-3
    assert make_config("ft-l", None).lr == 5e-4  # FT-L's SmolLM2 values are no longer everyone's
    # The locate-and-edit layers are not the gradient editors' (LoRA keeps its depth rule: N/6 on).
    assert make_config("lora", None, profile="smollm2").layers is None
    assert make_config("lora", None, profile="smollm2+released") == make_config("lora", None, profile="smollm2")
    assert choose_profile("released", "smollm2-135m").name == "smollm2+released"
    assert choose_profile("gpt2-xl+released", "whatever").name == "gpt2-xl+released"
    for bad in ("nope", "smollm2+nope", "released+released"):
        with pytest.raises(UnknownProfileError, match="unknown profile"):
            choose_profile(bad, None)


def _differences(method: str, base: str) -> dict[str, tuple[object, object]]:
    default = make_config(method, None, profile=base).model_dump()
    released = make_config(method, None, profile=f"{base}+released").model_dump()
    return {k: (default[k], released[k]) for k in default if default[k] != released[k]}


@pytest.mark.parametrize("base", ["smollm2", "generic", "llama3-8b", "gpt2-xl"])
@pytest.mark.parametrize("method", LOCATE_METHODS)
def test_released_profile_differs_from_the_default_only_where_documented(method, base):
    documented = {**RELEASED_RECIPE[LOCATE_AND_EDIT], **RELEASED_RECIPE.get(method, {})}
    if base in {"smollm2", "generic"}:
        documented.update(RELEASED_FALLBACK)
    differences = _differences(method, base)
    assert set(differences) <= set(documented)
    for name, (_, released) in differences.items():
        assert released == documented[name].value


def test_released_profile_on_smollm2_changes_exactly_the_recipe():
    fields = editor_class("encore").config_class.model_fields
    assert set(_differences("memit", "smollm2")) == {"context_mode", "past_edit_memory", "mom2_update_weight"}
    expected_encore = {"context_mode", "mom2_update_weight"} | ({"mpes_rule"} if "mpes_rule" in fields else set())
    assert set(_differences("encore", "smollm2")) == expected_encore
    # Llama-3-8B's own profile holds the released λ_p and steps: only the prefixes and MEMIT's memory change.
    assert set(_differences("memit", "llama3-8b")) == {"context_mode", "past_edit_memory"}


def test_released_prefixes_hold_ten_tokens_in_total(tiny_llama):
    rows = released_context_samples(tiny_llama, count=5, length=10, seed=0)
    assert len(rows) == 5 and all(len(row) == 10 for row in rows)
    for row, seed in zip(rows, SAMPLE_SEEDS, strict=True):
        seed_ids = list(tiny_llama.tokenizer(seed)["input_ids"])
        assert row[: len(seed_ids)] == seed_ids
    assert released_context_samples(tiny_llama, seed=0) == rows  # seeded
    assert released_context_samples(tiny_llama, seed=1) != rows
    # 'sampled' generates ten *new* tokens after the seed: longer prefixes than the released recipe's.
    sampled = sampled_context_templates(tiny_llama, count=1, length=10)
    assert len(tiny_llama.tokenizer(sampled.templates[1])["input_ids"]) > 10


def test_memit_under_the_released_profile_keeps_no_memory(tiny_llama, requests_3, fast):
    editor = create_editor("memit", tiny_llama, fast, profile="released")
    assert isinstance(editor, LocateEditEditor)
    result = editor.apply(tiny_llama, requests_3)
    result.undo(tiny_llama.model)
    assert result.info["contexts"]["mode"] == "released"
    assert len(result.info["contexts"]["templates"]) == 1 + fast["context_count"]
    assert result.info["memory_keys"] == 0 and editor.state_dict() == {}
