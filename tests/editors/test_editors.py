"""The five locate-and-edit editors on tiny random models: registry, exact undo/replay, solves that reach
their targets, AlphaEdit's null space, the norm constraint, state across calls and failure safety."""

from __future__ import annotations

import pydantic
import pytest
import torch

from seqedit.editors import EditError, EditResult, create_editor, describe_methods, editor_names
from seqedit.editors.alphaedit import AlphaEdit
from seqedit.editors.context import sampled_context_templates
from seqedit.editors.locate import LocateEditEditor, auto_layers
from seqedit.models.tiny import build_tiny_model

METHODS = ["rome", "memit", "emmet", "alphaedit", "encore"]


def _weights(lm):
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def test_registry_lists_the_methods_with_defaults_per_family():
    assert set(METHODS) <= set(editor_names())
    described = describe_methods()
    for name in METHODS:
        entry = described[name]
        assert entry["description"] and entry["batch_mode"] in {"batch", "sequential"}
        assert {"generic", "llama3-8b", "smollm2", "gpt2-xl", "smollm2+released"} <= set(entry["defaults"])
    assert described["rome"]["batch_mode"] == "sequential"
    assert described["encore"]["defaults"]["llama3-8b"]["norm_lambda"] == 20.0
    assert described["encore"]["defaults"]["gpt2-xl"]["mpes_patience"] == 4
    assert described["memit"]["defaults"]["llama3-8b"]["layers"] == [4, 5, 6, 7, 8]
    assert "measured on SmolLM2" in described["memit"]["sources"]["smollm2"]["mom2_update_weight"]
    assert auto_layers(32) == [4, 5, 6, 7, 8] and auto_layers(4) == [1, 2]


@pytest.mark.parametrize("method", METHODS)
def test_apply_undo_and_replay_are_exact(method, tiny_llama, requests_3, fast, tmp_path):
    lm = tiny_llama
    original = _weights(lm)
    editor = create_editor(method, lm, fast)
    result = editor.apply(lm, requests_3)
    layers = result.info["layers"]
    assert result.changed_parameters == sorted(f"{lm.adapter.mlp_out_proj(layer)}.weight" for layer in layers)
    assert {"statistics", "targets", "solve"} <= set(result.timings)
    assert [s["case_id"] for s in result.request_stats] == ["0", "1", "2"]
    edited = _weights(lm)
    assert any(not torch.equal(edited[n], original[n]) for n in result.changed_parameters)
    result.undo(lm.model)
    assert all(torch.equal(p, original[n]) for n, p in lm.model.named_parameters())
    result.replay(lm.model)
    assert all(torch.equal(p, edited[n]) for n, p in lm.model.named_parameters())
    result.save(tmp_path / "edit.safetensors")
    loaded = EditResult.load(tmp_path / "edit.safetensors")
    assert all(torch.equal(loaded.deltas[n], d) for n, d in result.deltas.items())
    assert loaded.method == method and loaded.request_stats[0]["case_id"] == "0"


# Settings under which each method's objective is dominated by the edited keys: one layer, the bare
# prompt only (so the key of the update is the key of the measured prompt), negligible regularisation.
EXACT = {
    "rome": {},
    "memit": {"mom2_update_weight": 1e-6},
    "encore": {"mom2_update_weight": 1e-6, "norm_lambda": 1e-6},
    "emmet": {"emmet_lambda": 0.0},
    "alphaedit": {"nullspace_threshold": 1e6, "norm_lambda": 1e-6},
}


@pytest.mark.parametrize("method", METHODS)
def test_update_maps_edited_keys_to_their_targets(method, tiny_llama, requests_3, fast):
    overrides = {**fast, **EXACT[method], "layers": [2], "context_mode": "none", "past_edit_memory": False}
    editor = create_editor(method, tiny_llama, overrides)
    result = editor.apply(tiny_llama, requests_3)
    for stat in result.request_stats:
        assert stat["z_error_before"] > 1e-3
        assert stat["z_error_after"] < 1e-3 * stat["z_error_before"], stat


def test_alphaedit_update_leaves_preserved_key_space_unchanged(tiny_llama, requests_3, fast):
    editor = create_editor("alphaedit", tiny_llama, {**fast, "nullspace_threshold": 2e-5})
    result = editor.apply(tiny_llama, requests_3)
    assert isinstance(editor, AlphaEdit)
    for layer in result.info["layers"]:
        ctx_key = next(k for k in editor._projectors if k[0] == layer)
        space = editor._projectors[ctx_key]
        assert 0 < space.dim < space.projector.shape[0]
        delta = result.deltas[f"{tiny_llama.adapter.mlp_out_proj(layer)}.weight"].double()
        preserved = torch.eye(space.projector.shape[0], dtype=torch.float64) - space.projector.double()
        assert (delta @ preserved).norm() < 1e-5 * delta.norm()
        assert result.info["layer_figures"][str(layer)]["null_space_dim"] == space.dim


def test_norm_constraint_shrinks_the_update(tiny_llama, requests_3, fast):
    norms = []
    for lam in [0.0, 1.0, 10.0]:
        editor = create_editor("memit", tiny_llama, {**fast, "mom2_update_weight": 1.0, "norm_lambda": lam})
        result = editor.apply(tiny_llama, requests_3)
        norms.append(sum(result.delta_norms().values()))
        result.undo(tiny_llama.model)
    assert norms[0] > norms[1] > norms[2]


def test_memory_of_past_edits_is_state(tiny_llama, requests_3, fast):
    lm = tiny_llama
    editor = create_editor("memit", lm, fast)
    assert editor.state_dict() == {}
    first = editor.apply(lm, requests_3[:2])
    state = editor.state_dict()
    layers = first.info["layers"]
    assert state["memory.keys"].item() == 2
    assert {f"memory.layer{layer}.upper" for layer in layers} <= set(state)  # symmetric: half is stored
    # A restored editor continues exactly like the original one.
    restored = create_editor("memit", lm, fast)
    restored.load_state_dict(state)
    for layer, gram in editor._memory.items():
        assert torch.equal(restored._memory[layer], gram)
    second_a = editor.apply(lm, requests_3[2:])
    second_a.undo(lm.model)
    second_b = restored.apply(lm, requests_3[2:])
    second_b.undo(lm.model)
    for name, delta in second_a.deltas.items():
        torch.testing.assert_close(second_b.deltas[name], delta)
    # Without the memory the second update is different.
    forgetful = create_editor("memit", lm, {**fast, "past_edit_memory": False})
    second_c = forgetful.apply(lm, requests_3[2:])
    assert any(not torch.allclose(second_c.deltas[n], d) for n, d in second_a.deltas.items())
    with pytest.raises(ValueError):
        restored.load_state_dict({"bogus": torch.zeros(1)})


def test_alphaedit_accumulates_keys(tiny_llama, requests_3, fast):
    editor = create_editor("alphaedit", tiny_llama, fast)
    editor.apply(tiny_llama, requests_3[:1])
    editor.apply(tiny_llama, requests_3[1:])
    assert editor.state_dict()["memory.keys"].item() == 3


def test_alphaedit_honours_past_edit_memory_off(tiny_llama, requests_3, fast):
    """``past_edit_memory=False`` keeps no keys: the second batch's update is the one a fresh editor makes
    on the once-edited model, and differs from the update of an editor that remembers the first batch."""
    lm = tiny_llama
    forgetful = create_editor("alphaedit", lm, {**fast, "past_edit_memory": False})
    first = forgetful.apply(lm, requests_3[:1])
    second = forgetful.apply(lm, requests_3[1:])
    second.undo(lm.model)
    assert not any(name.startswith("memory.") for name in forgetful.state_dict())
    assert second.info["memory_keys"] == 0
    fresh = create_editor("alphaedit", lm, {**fast, "past_edit_memory": False}).apply(lm, requests_3[1:])
    fresh.undo(lm.model)
    for name, delta in second.deltas.items():
        torch.testing.assert_close(fresh.deltas[name], delta)
    first.undo(lm.model)
    remembering = create_editor("alphaedit", lm, fast)
    remembering.apply(lm, requests_3[:1])
    with_memory = remembering.apply(lm, requests_3[1:])
    assert with_memory.info["memory_keys"] == 3
    assert any(not torch.allclose(with_memory.deltas[n], d) for n, d in second.deltas.items())


def test_rome_edits_one_layer_one_fact_at_a_time(tiny_llama, requests_3, fast):
    editor = create_editor("rome", tiny_llama, fast)
    result = editor.apply(tiny_llama, requests_3)
    assert len(result.deltas) == 1 and result.info["batch_mode"] == "one fact at a time"
    assert len(result.request_stats) == 3
    assert editor.state_dict() == {}
    with pytest.raises(pydantic.ValidationError):
        create_editor("rome", tiny_llama, {"layers": [1, 2]})


def test_failed_edit_changes_no_weight(tiny_llama, requests_3, fast, monkeypatch):
    lm = tiny_llama
    original = _weights(lm)
    editor = create_editor("memit", lm, fast)
    calls = {"n": 0}
    solve = type(editor).solve_layer

    def second_layer_diverges(self: LocateEditEditor, keys, resid, ctx):
        calls["n"] += 1
        delta = solve(self, keys, resid, ctx)
        return delta * float("nan") if calls["n"] == 2 else delta

    editor.apply(lm, requests_3[:1]).undo(lm.model)
    memory = editor.state_dict()
    monkeypatch.setattr(type(editor), "solve_layer", second_layer_diverges)
    with pytest.raises(EditError):
        editor.apply(lm, requests_3)
    assert all(torch.equal(p, original[n]) for n, p in lm.model.named_parameters())
    assert all(torch.equal(t, memory[k]) for k, t in editor.state_dict().items())


def test_bad_input_is_rejected(tiny_llama, fast):
    editor = create_editor("memit", tiny_llama, fast)
    with pytest.raises(ValueError, match="no edit requests"):
        editor.apply(tiny_llama, [])
    with pytest.raises(pydantic.ValidationError):
        create_editor("memit", tiny_llama, {"no_such_setting": 1})
    with pytest.raises(ValueError, match="out of range"):
        create_editor("memit", tiny_llama, {**fast, "layers": [9]}).apply(tiny_llama, [
            __import__("seqedit.data.records", fromlist=["EditRequest"]).EditRequest(
                case_id="a", subject="X", prompt="{} is", target_new="Y"
            )
        ])


@pytest.mark.parametrize("family", ["gpt2", "gptj", "gpt_neox"])
def test_other_families_reach_targets_exactly(family, requests_3, fast):
    """GPT-2 stores Conv1D weights transposed and GPT-J/NeoX run attention and MLP in parallel: the update
    must still land where the keys are (canonical layout) and add linearly to the residual stream."""
    lm = build_tiny_model(family, num_layers=4)
    original = _weights(lm)
    overrides = {**fast, "layers": [2], "context_mode": "none", "past_edit_memory": False}
    result = create_editor("rome", lm, overrides).apply(lm, requests_3)
    for stat in result.request_stats:
        assert stat["z_error_after"] < 1e-3 * stat["z_error_before"], stat
    result.undo(lm.model)
    assert all(torch.equal(p, original[n]) for n, p in lm.model.named_parameters())


def test_post_norm_family_edits_and_undoes(requests_3, fast):
    lm = build_tiny_model("gemma3", num_layers=4)
    original = _weights(lm)
    result = create_editor("memit", lm, fast).apply(lm, requests_3)
    assert result.changed_parameters and all(torch.isfinite(d).all() for d in result.deltas.values())
    result.undo(lm.model)
    assert all(torch.equal(p, original[n]) for n, p in lm.model.named_parameters())


def test_sampled_context_prefixes_are_seeded_and_recorded(tiny_llama, requests_3, fast):
    editor = create_editor("memit", tiny_llama, {**fast, "context_mode": "sampled", "context_count": 3})
    first = sampled_context_templates(tiny_llama, 3, 4)
    assert first == sampled_context_templates(tiny_llama, 3, 4)
    assert first.templates[0] == "{}" and len(first.templates) == 4 and first.mode == "sampled"
    result = editor.apply(tiny_llama, requests_3[:1])
    assert result.info["contexts"]["mode"] == "sampled" and len(result.info["contexts"]["templates"]) == 4


@pytest.mark.parametrize("method", ["memit", "rome"])
def test_post_norm_family_closes_the_target_gap(method, requests_3, fast):
    """Gemma's norm after the MLP: the residual is mapped through it (without, one layer closed ~half)."""
    lm = build_tiny_model("gemma3", num_layers=4)
    overrides = {**fast, **EXACT[method], "layers": [2], "context_mode": "none", "past_edit_memory": False}
    result = create_editor(method, lm, overrides).apply(lm, requests_3)
    for stat in result.request_stats:
        assert stat["z_error_after"] < 0.1 * stat["z_error_before"], stat


def test_post_norm_value_change_reaches_a_reachable_contribution():
    lm = build_tiny_model("gemma3", num_layers=2)
    adapter, layer = lm.adapter, 1
    norm = adapter.module(adapter.mlp_residual(layer))
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-0.5, 0.5, norm.weight.numel()))
    generator = torch.Generator().manual_seed(0)
    value = torch.randn(3, adapter.hidden_size, generator=generator, dtype=torch.float64)
    other = torch.randn(3, adapter.hidden_size, generator=generator, dtype=torch.float64)
    norm64 = norm.double()
    wanted = norm64(other) - norm64(value)  # reachable: the contribution of another value
    change = adapter.mlp_value_change(layer, value, wanted)
    reached = norm64(value + change) - norm64(value)
    torch.testing.assert_close(reached, wanted, atol=1e-6 * float(wanted.abs().max()), rtol=0)


def test_a_gram_matrix_is_stored_as_its_upper_triangle_only_when_exactly_symmetric():
    from seqedit.editors.locate import _packed_gram, _unpacked_gram

    keys = torch.randn(7, 5, dtype=torch.float32)
    gram = keys.T @ keys
    gram = (gram + gram.T) / 2  # exactly symmetric whatever the BLAS
    packed = _packed_gram("memory.layer3", gram)
    assert set(packed) == {"memory.layer3.upper"} and packed["memory.layer3.upper"].numel() == 15
    assert torch.equal(_unpacked_gram("memory.layer3.upper", packed["memory.layer3.upper"]), gram)
    lopsided = gram.clone()
    lopsided[0, 1] = torch.nextafter(lopsided[0, 1], torch.tensor(float("inf")))
    assert torch.equal(_packed_gram("memory.layer3", lopsided)["memory.layer3"], lopsided)
    with pytest.raises(ValueError, match="upper triangle"):
        _unpacked_gram("memory.layer3.upper", torch.zeros(14))
