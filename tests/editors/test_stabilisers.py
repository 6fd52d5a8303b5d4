"""The stabilisers' defining properties: NAS's targets have the reference norm, RECT keeps exactly the
chosen fraction, PRUNE leaves no singular value of the accumulated update above its bound, the budget's
ratio never exceeds the cap; and each composes with the locate-and-edit methods and resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch

from seqedit.data.records import EditRequest
from seqedit.editors import create_editor
from seqedit.editors.stabilisers import (
    StabiliserSettings,
    StabiliserState,
    budget_factor,
    nas_targets,
    prune_bound,
    prune_restrain,
    rect_update,
    stabilise_weights,
    trimmed_mean,
)
from seqedit.models.tiny import build_tiny_model

FACTS = [
    ("France", "Rome"), ("Spain", "Oslo"), ("Peru", "Kyiv"), ("Chile", "Lima"), ("Italy", "Bern"),
    ("Japan", "Cairo"), ("Kenya", "Quito"), ("Nepal", "Dakar"), ("Ghana", "Tokyo"), ("Fiji", "Paris"),
]


def requests(start: int, count: int) -> list[EditRequest]:
    return [
        EditRequest(case_id=str(i), subject=s, prompt="The capital of {} is", target_new=t, target_true="x")
        for i, (s, t) in enumerate(FACTS[start : start + count], start=start)
    ]


def down_proj_weights(lm, layers: list[int]) -> dict[str, torch.Tensor]:
    adapter = lm.adapter
    return {
        adapter.mlp_out_proj(layer): adapter.from_native(
            adapter.mlp_out_proj(layer), adapter.weight(adapter.mlp_out_proj(layer))
        ).double().clone()
        for layer in layers
    }


# ---------------------------------------------------------------------------------------------- maths
def test_nas_targets_have_the_reference_norm() -> None:
    g = torch.Generator().manual_seed(0)
    hidden, v0, delta = (torch.randn(6, 16, generator=g, dtype=torch.float64) for _ in range(3))
    reference = float((v0 + delta).norm(dim=-1).mean())
    result = nas_targets(hidden + delta, hidden, v0, reference, skip_factor=10.0)
    v_star = v0 + (result.z - hidden)
    assert torch.allclose(v_star.norm(dim=-1), torch.full((6,), reference, dtype=torch.float64), rtol=1e-12)
    # the direction of v* is kept
    cosine = torch.nn.functional.cosine_similarity(v_star, v0 + delta, dim=-1)
    assert torch.allclose(cosine, torch.ones(6, dtype=torch.float64))
    # above skip·reference the fact is not edited: z = h
    result = nas_targets(hidden + delta, hidden, v0, reference, skip_factor=1e-3)
    assert torch.equal(result.z, hidden) and all(s["nas_skipped"] for s in result.stats)


def test_trimmed_mean_drops_the_top_five_percent() -> None:
    values = torch.cat([torch.ones(19), torch.tensor([100.0])])
    assert trimmed_mean(values) == pytest.approx(1.0)
    assert trimmed_mean(torch.tensor([1.0, 3.0])) == pytest.approx(2.0)


@pytest.mark.parametrize("fraction", [0.2, 0.4, 0.05, 1.0])
def test_rect_changes_exactly_the_chosen_fraction(fraction: float) -> None:
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(24, 40, generator=g, dtype=torch.float64)
    weight = torch.randn(24, 40, generator=g, dtype=torch.float64)
    kept = rect_update(delta, weight, fraction)
    changed = kept != 0
    assert int(changed.sum()) == math.ceil(fraction * delta.numel())
    assert torch.equal(kept[changed], delta[changed])
    # the kept entries are those of largest relative change
    relative = (delta.abs() / (weight.abs() + 1e-8))
    if fraction < 1.0:
        assert float(relative[changed].min()) >= float(relative[~changed].max())


def test_prune_bound_is_the_log_restraint() -> None:
    sigma = torch.tensor([0.5, 2.0, 8.0, 100.0], dtype=torch.float64)
    out = prune_bound(sigma, 2.0, math.e)
    assert out[0] == 0.5 and out[1] == 2.0
    assert out[2] == pytest.approx(math.log(8.0) - math.log(2.0) + 2.0)
    assert out[3] == pytest.approx(math.log(100.0) - math.log(2.0) + 2.0)
    assert torch.all(out <= sigma)


def test_prune_restrain_leaves_no_singular_value_above_its_bound() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(20, 30, generator=g, dtype=torch.float64)
    sigma_max0 = float(torch.linalg.matrix_norm(base, ord=2))
    total = 5.0 * torch.randn(20, 30, generator=g, dtype=torch.float64)
    raw_sigma = torch.linalg.svdvals(total)
    restrained, count, ratio = prune_restrain(total, base, math.e)
    sigma = torch.linalg.svdvals(restrained)
    assert count == int((raw_sigma > sigma_max0).sum()) > 0
    assert ratio == pytest.approx(float(raw_sigma[0]) / sigma_max0, rel=1e-12) and ratio > 1
    small = 0.01 * total * sigma_max0 / float(raw_sigma[0])  # well inside the bound: returned unchanged
    unchanged, none, headroom = prune_restrain(small, base, math.e)
    assert none == 0 and torch.equal(unchanged, small) and headroom == pytest.approx(0.01, rel=1e-9)
    bound = prune_bound(raw_sigma, sigma_max0, math.e)
    assert torch.allclose(sigma, bound.sort(descending=True).values, rtol=1e-9)
    assert float(sigma.max()) <= sigma_max0 + math.log(float(raw_sigma.max()) / sigma_max0) + 1e-9


@pytest.mark.parametrize("kind", ["weight", "update"])
def test_budget_factor_meets_the_cap(kind: str) -> None:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(10, 12, generator=g, dtype=torch.float64)
    update = 3.0 * torch.randn(10, 12, generator=g, dtype=torch.float64)
    cap = 1.2 if kind == "weight" else 0.3
    c = budget_factor(base, update, cap, kind)  # type: ignore[arg-type]
    assert 0 < c < 1
    measured = (base + c * update).norm() if kind == "weight" else (c * update).norm()
    assert float(measured) == pytest.approx(cap * float(base.norm()), rel=1e-6)
    assert float(measured) <= cap * float(base.norm())
    assert budget_factor(base, 1e-6 * update, cap, kind) == 1.0  # type: ignore[arg-type]


def test_weight_budget_must_exceed_one() -> None:
    with pytest.raises(ValueError, match="must be > 1"):
        StabiliserSettings(norm_budget=0.9)


def test_stabilise_weights_is_relative_to_the_base_over_batches() -> None:
    """PRUNE on the raw sum: after every batch W = W0 + U F(Σ) Vᵀ of Σ of all batch updates."""

    class Identity:
        def from_native(self, _path: str, native: torch.Tensor) -> torch.Tensor:
            return native

    g = torch.Generator().manual_seed(4)
    w0 = torch.randn(8, 12, generator=g, dtype=torch.float64)
    settings = StabiliserSettings(prune=True)
    state, weight, raw = StabiliserState(), w0.clone(), torch.zeros_like(w0)
    for _ in range(5):
        delta = 2.0 * torch.randn(8, 12, generator=g, dtype=torch.float64)
        raw = raw + delta
        totals = {"m": delta.clone()}
        state, figures = stabilise_weights(Identity(), {"m": weight}, totals, settings, state)  # type: ignore[arg-type]
        weight = weight + totals["m"]
        expected, _, ratio = prune_restrain(raw, w0, math.e)
        # the state keeps the raw sum in float32 (as a weight), so the ratio matches to float32 precision
        assert figures["prune_sigma_ratio_max"] == pytest.approx(ratio, rel=1e-5)
        assert torch.allclose(weight - w0, expected, atol=1e-6)
        assert torch.allclose(state.raw["m"].double(), raw, atol=1e-5)
    assert figures["prune_restrained_values"] > 0


# ---------------------------------------------------------------------------------------------- editors
@pytest.mark.parametrize(
    ("method", "kind", "cap"),
    [
        ("memit", "weight", 1.002),
        ("emmet", "weight", 1.002),
        # AlphaEdit and ENCORE shrink ‖W‖ slightly on the tiny model, so cap the update itself.
        ("alphaedit", "update", 1e-4),
        ("encore", "update", 1e-4),
        ("memit", "update", 1e-3),
    ],
)
def test_budget_ratio_never_exceeds_the_cap_over_many_batches(
    method: str, kind: str, cap: float, fast: dict[str, object]
) -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    overrides = {**fast, "norm_budget": cap, "norm_budget_kind": kind, "v_num_grad_steps": 3}
    editor = create_editor(method, lm, overrides)
    layers = editor.resolve_layers(lm)  # type: ignore[attr-defined]
    base = down_proj_weights(lm, layers)
    acted = 0
    for start in range(0, 10, 2):
        result = editor.apply(lm, requests(start, 2))
        acted += result.request_stats[0]["budget_matrices_scaled"]
        assert 0 < result.request_stats[0]["budget_min_factor"] <= 1
        for path, weight in down_proj_weights(lm, layers).items():
            measured = weight if kind == "weight" else weight - base[path]
            ratio = float(measured.norm() / base[path].norm())
            # float32 weights: W - W0 is known to about eps32·‖W‖, i.e. eps32 in units of ‖W0‖
            assert ratio <= cap + 8 * torch.finfo(torch.float32).eps, f"{method} {path}: ratio {ratio} > cap {cap}"
    assert acted > 0  # the cap is tight enough that the budget had to act


def test_prune_composes_with_memit_and_bounds_the_accumulated_update(fast: dict[str, object]) -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    editor = create_editor("memit", lm, {**fast, "prune": True, "v_num_grad_steps": 3})
    layers = editor.resolve_layers(lm)  # type: ignore[attr-defined]
    base = down_proj_weights(lm, layers)
    for start in range(0, 6, 2):
        editor.apply(lm, requests(start, 2))
    for path, weight in down_proj_weights(lm, layers).items():
        sigma_max0 = float(torch.linalg.matrix_norm(base[path], ord=2))
        raw_max = float(torch.linalg.matrix_norm(editor._stabilisers.raw[path].double(), ord=2))  # type: ignore[attr-defined]
        bound = sigma_max0 + max(0.0, math.log(raw_max / sigma_max0)) if raw_max > sigma_max0 else raw_max
        sigma = torch.linalg.svdvals(weight - base[path])
        assert float(sigma.max()) <= bound * (1 + 1e-5) + 1e-6


def test_rect_composes_with_memit(fast: dict[str, object]) -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    editor = create_editor("memit", lm, {**fast, "rect": True, "rect_keep_fraction": 0.2, "v_num_grad_steps": 3})
    result = editor.apply(lm, requests(0, 2))
    for name, delta in result.deltas.items():
        assert int((delta != 0).sum()) == math.ceil(0.2 * delta.numel()), name
    assert result.request_stats[0]["rect_kept_fraction"] == pytest.approx(0.2, abs=1e-3)


@pytest.mark.parametrize("method", ["memit", "encore", "rome"])
def test_nas_rescales_value_vectors_of_the_first_batch_to_their_mean(method: str, fast: dict[str, object]) -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    editor = create_editor(method, lm, {**fast, "nas": True, "v_num_grad_steps": 3})
    result = editor.apply(lm, requests(0, 3))
    stats = result.request_stats
    reference = stats[0]["nas_reference"]
    assert reference == pytest.approx(editor._stabilisers.nas_reference)  # type: ignore[attr-defined]
    if method != "rome":  # ROME measures the reference on its first fact alone
        assert reference == pytest.approx(sum(s["nas_v_norm"] for s in stats) / 3, rel=1e-6)
    for stat in stats:
        assert stat["nas_scale"] * stat["nas_v_norm"] == pytest.approx(reference, rel=1e-6) or stat["nas_skipped"]


def test_stabiliser_state_resumes_exactly(fast: dict[str, object]) -> None:
    overrides = {**fast, "nas": True, "prune": True, "norm_budget": 1.01, "v_num_grad_steps": 3}
    lm_a = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    lm_b = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    a = create_editor("memit", lm_a, overrides)
    a.apply(lm_a, requests(0, 2))
    state = {k: v.clone() for k, v in a.state_dict().items()}
    assert any(k.startswith("stabilisers.raw.") for k in state) and "stabilisers.nas_reference" in state
    b = create_editor("memit", lm_b, overrides)
    b.apply(lm_b, requests(0, 2))
    resumed = create_editor("memit", lm_b, overrides)
    resumed.load_state_dict(state)
    second_a = a.apply(lm_a, requests(2, 2))
    second_b = resumed.apply(lm_b, requests(2, 2))
    for name, delta in second_a.deltas.items():
        assert torch.equal(delta, second_b.deltas[name]), name
    assert second_a.request_stats == second_b.request_stats


def test_listed_with_defaults_for_every_locate_method() -> None:
    from seqedit.editors import describe_methods
    from seqedit.editors.registry import describe_stabilisers

    options = describe_stabilisers()
    assert {"nas", "prune", "rect", "norm_budget"} <= set(options)
    assert options["rect_keep_fraction"]["default"] == 0.2 and options["prune_log_base"]["default"] == math.e
    described = describe_methods()
    for method in ("rome", "memit", "emmet", "alphaedit", "encore"):
        defaults = described[method]["defaults"]["smollm2"]
        assert defaults["nas"] is False and defaults["norm_budget"] is None, method
