"""FT and FT-L on tiny random models: constraint, effect, exact undo, and no side effects on the model."""

from __future__ import annotations

import pytest
import torch

from seqedit.data.records import EditRequest
from seqedit.editors import create_editor, editor_class
from seqedit.editors.edit_loss import request_batch, target_probabilities
from seqedit.editors.finetune import FineTuneConfig, FineTuneEditor, FTLConfig, FTLEditor
from seqedit.models.tiny import build_tiny_model


def _request(case_id: str = "1", subject: str = "Zorblat", target: str = "Paris") -> EditRequest:
    return EditRequest(case_id=case_id, subject=subject, prompt="The capital of {} is", target_new=target)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}




@pytest.fixture
def tiny():
    return build_tiny_model("llama", num_layers=3, hidden=48, seed=1)


def test_ftl_respects_its_linf_constraint(tiny) -> None:
    eps = 2e-3
    editor = FTLEditor(FTLConfig(layers=[1], norm_constraint=eps, lr=5e-2, steps=8, stop_loss=0.0))
    before = _snapshot(tiny.model)
    result = editor.apply(tiny, [_request()])
    (name,) = result.deltas
    assert name == "model.layers.1.mlp.down_proj.weight"
    change = tiny.model.get_parameter(name).detach() - before[name]
    # The bound is active (a large learning rate pushes entries to it) and never exceeded.
    assert float(result.deltas[name].abs().max()) == pytest.approx(eps, rel=1e-6)
    assert float(change.abs().max()) <= eps * (1 + 1e-5)
    for other, value in before.items():
        if other != name:
            assert torch.equal(tiny.model.get_parameter(other), value), other


def test_ft_raises_the_target_probability(tiny) -> None:
    request = _request()
    batch = request_batch(tiny, [request])
    (p_before,) = target_probabilities(tiny, batch)
    editor = FineTuneEditor(FineTuneConfig(layers=[0, 1, 2], lr=1e-2, steps=15))
    result = editor.apply(tiny, [request])
    (p_after,) = target_probabilities(tiny, batch)
    assert p_after > 100 * p_before
    assert result.request_stats[0]["final_prob"] == pytest.approx(p_after, rel=1e-4)
    assert result.info["steps"] >= 1 and set(result.timings) >= {"optimise", "commit"}


def test_deltas_are_exactly_what_was_added_and_undo_is_bit_exact(tiny) -> None:
    before = _snapshot(tiny.model)
    result = FineTuneEditor(FineTuneConfig(layers=[0, 2], lr=1e-2, steps=4)).apply(tiny, [_request(), _request("2", "Quux", "Rome")])
    after = _snapshot(tiny.model)
    assert set(result.deltas) == {"model.layers.0.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}
    for name, delta in result.deltas.items():
        assert torch.equal(after[name], before[name] + delta)
        assert torch.equal(result.originals[name], before[name])
        assert float(delta.abs().max()) > 0
    result.undo(tiny.model)
    assert all(torch.equal(tiny.model.get_parameter(n), v) for n, v in before.items())
    result.replay(tiny.model)
    assert all(torch.equal(tiny.model.get_parameter(n), v) for n, v in after.items())


def test_model_flags_and_mode_are_restored(tiny) -> None:
    embed = tiny.model.get_input_embeddings().weight
    embed.requires_grad_(True)  # a flag the editor must not change
    tiny.model.train()
    FineTuneEditor(FineTuneConfig(layers=[1], lr=1e-2, steps=2)).apply(tiny, [_request()])
    assert embed.requires_grad
    assert sum(p.requires_grad for p in tiny.model.parameters()) == 1
    assert tiny.model.training and all(m.training for m in tiny.model.modules())
    assert all(p.grad is None for p in tiny.model.parameters())


def test_frobenius_cap_and_penalty_limit_the_update(tiny) -> None:
    request = _request()
    base = _snapshot(tiny.model)
    free = FineTuneEditor(FineTuneConfig(layers=[1], lr=1e-2, steps=6, stop_loss=0.0)).apply(tiny, [request])
    free_norm = next(iter(free.delta_norms().values()))
    free.undo(tiny.model)
    cap = free_norm / 4
    capped = FineTuneEditor(FineTuneConfig(layers=[1], lr=1e-2, steps=6, stop_loss=0.0, max_delta_fro=cap)).apply(
        tiny, [request]
    )
    assert next(iter(capped.delta_norms().values())) <= cap * (1 + 1e-5)
    capped.undo(tiny.model)
    penalised = FineTuneEditor(
        FineTuneConfig(layers=[1], lr=1e-2, steps=6, stop_loss=0.0, norm_penalty=50.0)
    ).apply(tiny, [request])
    assert next(iter(penalised.delta_norms().values())) < 0.9 * free_norm
    penalised.undo(tiny.model)
    assert all(torch.equal(tiny.model.get_parameter(n), v) for n, v in base.items())


def test_conv1d_models_are_edited_in_their_native_layout() -> None:
    lm = build_tiny_model("gpt2", num_layers=2, hidden=32, seed=2)
    request = _request()
    batch = request_batch(lm, [request])
    (p_before,) = target_probabilities(lm, batch)
    result = FineTuneEditor(FineTuneConfig(layers=[0, 1], lr=1e-2, steps=10)).apply(lm, [request])
    (p_after,) = target_probabilities(lm, batch)
    assert p_after > 10 * p_before
    for name, delta in result.deltas.items():
        assert delta.shape == lm.model.get_parameter(name).shape  # Conv1D stores [in, out]


def test_registry_names_and_model_defaults(tiny) -> None:
    assert editor_class("ft-l") is FTLEditor and editor_class("ft") is FineTuneEditor
    ftl = create_editor("ft-l", tiny)
    ft = create_editor("ft", tiny, {"steps": 3})
    assert isinstance(ftl.config, FTLConfig) and len(ftl.config.layers or []) == 1
    assert ftl.config.norm_constraint is not None
    assert isinstance(ft.config, FineTuneConfig) and len(ft.config.layers or []) > 1 and ft.config.steps == 3
    with pytest.raises(ValueError, match="kinds"):
        FineTuneConfig(kinds=["mlp.nothing"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="norm_constraint"):
        FTLEditor(FTLConfig(norm_constraint=None)).apply(tiny, [_request()])


DARRIEUX = EditRequest(
    case_id="0", subject="Danielle Darrieux", prompt="The mother tongue of {} is", target_new="English",
    target_true="French",
)


def _prefers_new(lm, request: EditRequest) -> bool:
    from seqedit.models.tokens import encode_prompt_targets, target_log_probs

    batch = encode_prompt_targets(lm.tokenizer, [request.full_prompt] * 2, [request.target_new, request.target_true])
    with torch.no_grad():
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    _total, mean = target_log_probs(logits, batch)
    return bool(mean[0] > mean[1])


@pytest.mark.integration
def test_ftl_defaults_edit_a_fact_of_the_embedded_model(embedded_model) -> None:
    assert not _prefers_new(embedded_model, DARRIEUX)
    editor = create_editor("ft-l", embedded_model)
    result = editor.apply(embedded_model, [DARRIEUX])
    try:
        assert _prefers_new(embedded_model, DARRIEUX)
        (delta,) = result.deltas.values()
        assert float(delta.abs().max()) <= float(editor.config.norm_constraint or 0.0) * (1 + 1e-5)
    finally:
        result.undo(embedded_model.model)
    assert not _prefers_new(embedded_model, DARRIEUX)
