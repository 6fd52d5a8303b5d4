"""Activation monitor on tiny models: zero drift at baseline, drift exactly where the model changed."""

from __future__ import annotations

import pytest
import torch

from seqedit.models.tiny import build_tiny_model
from seqedit.monitor.activations import ActivationMonitor
from seqedit.monitor.probes import BUILTIN_PROBE_PROMPTS, build_probe_set, snippet

PROBES = BUILTIN_PROBE_PROMPTS[:6]


def _by_key(report):
    return {(r["name"], r["scope"], r["layer"]): r["value"] for r in report.rows()}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_baseline_report_shows_no_drift(family):
    tiny = build_tiny_model(family, num_layers=3, hidden=32, seed=0)
    monitor = ActivationMonitor(tiny, PROBES, top_k=4, max_length=24)
    values = _by_key(monitor.baseline())
    for layer in range(3):
        for site in ("mlp.out_proj", "block"):
            assert values[("cka", site, layer)] == pytest.approx(1.0, abs=1e-9)
            assert values[("cosine", site, layer)] == pytest.approx(1.0, abs=1e-9)
            assert values[("principal_angle_max_deg", site, layer)] < 1e-3
        assert values[("mlp_out_norm_rel", "mlp.out_proj", layer)] == pytest.approx(1.0)
        assert values[("residual_norm_rel", "block", layer)] == pytest.approx(1.0)
        attn, mlp = (
            values[("attn_share", "residual_update", layer)],
            values[("mlp_share", "residual_update", layer)],
        )
        assert 0 < attn < 1 and attn + mlp == pytest.approx(1.0)
    assert monitor.n_tokens == sum(len(tiny.tokenizer(p)["input_ids"][:24]) - 1 for p in PROBES)


def test_drift_appears_at_and_above_the_edited_layer_only():
    tiny = build_tiny_model("llama", num_layers=4, hidden=32, seed=0)
    monitor = ActivationMonitor(tiny, PROBES, top_k=4, max_length=24)
    monitor.baseline()
    proj = tiny.adapter.mlp_out_proj(2)
    delta = 0.5 * torch.randn(tiny.adapter.weight(proj).shape, generator=torch.Generator().manual_seed(0))
    tiny.adapter.add_to_weight(proj, delta)
    values = _by_key(monitor.measure())
    for layer in (0, 1):  # below the edit: bit-identical activations
        assert values[("cosine", "block", layer)] == pytest.approx(1.0, abs=1e-12)
        assert values[("mlp_out_norm_rel", "mlp.out_proj", layer)] == 1.0
    assert values[("cosine", "mlp.out_proj", 2)] < 0.99
    assert values[("cka", "mlp.out_proj", 2)] < 0.99
    assert values[("mlp_out_norm_rel", "mlp.out_proj", 2)] > 1.0  # a large random delta adds energy
    assert values[("principal_angle_max_deg", "mlp.out_proj", 2)] > 1.0
    assert values[("cosine", "block", 3)] < 1.0


def test_state_round_trip_and_probe_check():
    tiny = build_tiny_model("llama", num_layers=2, hidden=32, seed=0)
    first = ActivationMonitor(tiny, PROBES, top_k=3, layers=[1])
    first.baseline()
    state = {k: v.clone() for k, v in first.state_dict().items()}
    tiny.adapter.add_to_weight(tiny.adapter.mlp_out_proj(1), torch.full((32, 96), 0.02))
    resumed = ActivationMonitor(tiny, PROBES, top_k=3, layers=[1])
    resumed.load_state_dict(state)
    assert resumed.measure().rows() == first.measure().rows()
    other = ActivationMonitor(tiny, PROBES[:5], top_k=3, layers=[1])
    with pytest.raises(ValueError, match="different probe set"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="lacks"):
        ActivationMonitor(tiny, PROBES, top_k=3, layers=[0]).load_state_dict(state)


def test_measure_before_baseline_and_bad_top_k():
    tiny = build_tiny_model("llama", num_layers=2, hidden=32, seed=0)
    with pytest.raises(RuntimeError, match="before baseline"):
        ActivationMonitor(tiny, PROBES, top_k=3).measure()
    with pytest.raises(ValueError, match="top_k"):
        ActivationMonitor(tiny, ["ab", "cd"], top_k=5)


def test_probe_set_is_deterministic_given_the_seed():
    paragraphs = [f"paragraph {i} " + "word " * 40 for i in range(50)]
    a = build_probe_set(paragraphs, n_snippets=5, n_prompts=4, seed=1, snippet_chars=60)
    assert a == build_probe_set(paragraphs, n_snippets=5, n_prompts=4, seed=1, snippet_chars=60)
    assert a != build_probe_set(paragraphs, n_snippets=5, n_prompts=4, seed=2, snippet_chars=60)
    assert len(a.texts) == 9 and a.sources[:5] != ("prompt",) * 5 and a.sources[5:] == ("prompt",) * 4
    assert all(len(t) <= 60 for t in a.texts[:5])
    assert build_probe_set(None, n_prompts=3).sources == ("prompt",) * 3
    assert snippet("alpha beta gamma", 12) == "alpha beta"
    with pytest.raises(ValueError, match="paragraphs"):
        build_probe_set(paragraphs[:2], n_snippets=5)


def test_noise_floors_compare_two_halves_of_the_probe_set():
    tiny = build_tiny_model("llama", num_layers=2, hidden=32, seed=0)
    monitor = ActivationMonitor(tiny, PROBES, top_k=3, max_length=24)
    report = monitor.baseline()
    floors = {(f.layer, f.site): f for f in report.floors}
    assert set(floors) == {(layer, site) for layer in range(2) for site in ("mlp.out_proj", "block")}
    probe = monitor._probe_of_token()
    for (layer, site), floor in floors.items():  # recompute one floor independently from the baseline rows
        x = monitor._baseline[(site, layer)].double()
        a, b = x[probe % 2 == 0], x[probe % 2 == 1]
        ua = torch.linalg.svd(a - a.mean(0), full_matrices=False).Vh[:3].T
        ub = torch.linalg.svd(b - b.mean(0), full_matrices=False).Vh[:3].T
        cosines = torch.linalg.svdvals(ua.T @ ub).clamp(max=1)
        assert floor.angle_max_deg == pytest.approx(float(torch.rad2deg(torch.arccos(cosines.min()))), abs=1e-4)
        assert floor.norm_ratio == pytest.approx(float(b.norm(dim=1).mean() / a.norm(dim=1).mean()), rel=1e-9)
        centred = b - b.mean(0)
        outside = 1 - (centred @ ua).pow(2).sum() / centred.pow(2).sum()
        assert floor.energy_outside == pytest.approx(float(outside), rel=1e-6)
    names = {r["name"] for r in report.rows()}
    assert {"principal_angle_mean_deg_floor", "energy_outside_topk_floor", "residual_norm_rel_floor"} <= names
    for row in report.rows():  # unedited: the energy beyond the top-k principal components of the data itself
        if row["name"] == "energy_outside_topk":
            x = monitor._baseline[(row["scope"], row["layer"])].double()
            s = torch.linalg.svdvals(x - x.mean(0)).pow(2)
            assert row["value"] == pytest.approx(float(1 - s[:3].sum() / s.sum()), rel=1e-6)


def test_energy_outside_grows_when_activations_leave_the_subspace():
    tiny = build_tiny_model("llama", num_layers=3, hidden=32, seed=0)
    monitor = ActivationMonitor(tiny, PROBES, top_k=4, max_length=24)
    monitor.baseline()
    proj = tiny.adapter.mlp_out_proj(1)
    tiny.adapter.add_to_weight(proj, 2.0 * torch.randn(tiny.adapter.weight(proj).shape, generator=torch.Generator().manual_seed(1)))
    values = _by_key(monitor.measure())
    assert values[("energy_outside_topk", "mlp.out_proj", 0)] == pytest.approx(
        _by_key(monitor.baseline())[("energy_outside_topk", "mlp.out_proj", 0)], abs=1e-9
    )
    assert values[("energy_outside_topk", "mlp.out_proj", 1)] > 0.05
