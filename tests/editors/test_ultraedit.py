"""UltraEdit: the one-step shift is the ridge map of the keys onto their pseudo values (ΔW K = V G(G+λI)⁻¹,
so ΔW k_i → v_i as the ridge vanishes), a small step lowers the edit loss, the lifelong normaliser holds
the statistics of every feature seen, and a resumed editor continues exactly."""

from __future__ import annotations

import pytest
import torch

from seqedit.data.records import EditRequest
from seqedit.editors import create_editor, describe_methods
from seqedit.editors.edit_loss import forward_logits, request_batch, row_nll
from seqedit.editors.solvers import least_squares_update
from seqedit.editors.ultraedit import (
    LifelongNormaliser,
    UltraEdit,
    UltraEditConfig,
    default_layers,
    edit_features,
    pseudo_values,
)
from seqedit.models.tiny import build_tiny_model

FACTS = [("France", "Rome"), ("Spain", "Oslo"), ("Peru", "Kyiv"), ("Chile", "Lima"), ("Italy", "Bern"), ("Japan", "Cairo")]


def requests(start: int, count: int) -> list[EditRequest]:
    return [
        EditRequest(case_id=str(i), subject=s, prompt="The capital of {} is", target_new=t, target_true="x")
        for i, (s, t) in enumerate(FACTS[start : start + count], start=start)
    ]


def test_normaliser_holds_the_statistics_of_everything_seen() -> None:
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, 7, generator=g, dtype=torch.float64) * 3 + 1 for n in (1, 5, 2, 9)]
    norm = LifelongNormaliser.empty(7)
    for chunk in chunks:
        norm = norm.updated(chunk)
    seen = torch.cat(chunks)
    assert norm.count == seen.shape[0]
    assert torch.allclose(norm.mean, seen.mean(0), atol=1e-12)
    assert torch.allclose(norm.std, seen.std(0), atol=1e-12)  # unbiased, sqrt(s² / (N - 1))
    normalised = norm.normalise(seen)
    assert torch.allclose(normalised.mean(0), torch.zeros(7, dtype=torch.float64), atol=1e-6)


def test_shift_maps_keys_onto_pseudo_values_up_to_the_ridge() -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    path = lm.adapter.mlp_out_proj(2)
    features, _ = edit_features(lm, request_batch(lm, requests(0, 3)), [path])
    f = features[path]
    norm = LifelongNormaliser.empty(f.keys.shape[1] + f.grads.shape[1]).updated(torch.cat([f.keys, f.grads], -1))
    values = pseudo_values(f, norm, lr=1e-3)
    keys = f.keys.double()
    for ridge in (1.0, 1e-6):
        shift = least_squares_update(keys, values, None, ridge)
        gram = keys @ keys.T
        expected = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype), gram).T @ values
        assert torch.allclose(keys @ shift.T, expected, atol=1e-9 * float(values.abs().max()) + 1e-12)
    # with a vanishing ridge each key is mapped onto its own pseudo value (the keys are independent)
    reached = keys @ shift.T
    assert torch.allclose(reached, values, rtol=1e-3, atol=1e-3 * float(values.abs().max()))


def test_pseudo_values_are_a_descent_step_in_the_normalised_space() -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    path = lm.adapter.mlp_out_proj(2)
    features, _ = edit_features(lm, request_batch(lm, requests(0, 3)), [path])
    f = features[path]
    norm = LifelongNormaliser.empty(f.keys.shape[1] + f.grads.shape[1]).updated(torch.cat([f.keys, f.grads], -1))
    values = pseudo_values(f, norm, lr=1e-2)
    g_hat = norm.normalise(torch.cat([f.keys, f.grads], -1))[:, f.keys.shape[1]:]
    # v_i = -c_i ĝ_i with c_i = lr ‖k̂_i‖² > 0
    cos = torch.nn.functional.cosine_similarity(values, g_hat, dim=-1)
    assert torch.allclose(cos, -torch.ones_like(cos), atol=1e-9)


def test_one_step_edit_lowers_the_edit_loss() -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    batch_requests = requests(0, 4)
    batch = request_batch(lm, batch_requests)
    with torch.no_grad():
        before = row_nll(forward_logits(lm, batch), batch)
    editor = UltraEdit(UltraEditConfig(layers=[1, 2], lr=1e-3))
    result = editor.apply(lm, batch_requests)
    with torch.no_grad():
        after = row_nll(forward_logits(lm, batch), batch)
    assert float(after.mean()) < float(before.mean())
    assert sorted(result.deltas) == [f"{lm.adapter.mlp_out_proj(layer)}.weight" for layer in (1, 2)]
    assert all(s["final_prob"] >= 0 for s in result.request_stats)


def test_normaliser_resumes_exactly_after_state_dict() -> None:
    config = UltraEditConfig(layers=[1, 2], lr=1e-3)
    lm_a = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    lm_b = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    a = UltraEdit(config)
    a.apply(lm_a, requests(0, 2))
    state = {k: v.clone() for k, v in a.state_dict().items()}
    (key,) = {name.split(".")[1] for name in state}  # both edited matrices share one shape
    assert int(state[f"normaliser.{key}.count"]) > 0
    b = UltraEdit(config)
    b.apply(lm_b, requests(0, 2))  # the model as a killed run left it
    resumed = UltraEdit(config)
    resumed.load_state_dict(state)
    second_a = a.apply(lm_a, requests(2, 2))
    second_b = resumed.apply(lm_b, requests(2, 2))
    for name, delta in second_a.deltas.items():
        assert torch.equal(delta, second_b.deltas[name]), name
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    # a fresh editor (statistics lost) would not give the same update
    fresh = UltraEdit(config)
    fresh_result = fresh.apply(build_tiny_model("llama", num_layers=4, hidden=64, seed=0), requests(2, 2))
    assert not all(torch.equal(d, fresh_result.deltas[n]) for n, d in second_a.deltas.items())


def test_bad_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="unexpected state entry"):
        UltraEdit().load_state_dict({"memory.layer1": torch.zeros(2, 2)})


def test_registered_with_defaults() -> None:
    lm = build_tiny_model("llama", num_layers=4, hidden=64, seed=0)
    editor = create_editor("ultraedit", lm)
    assert isinstance(editor, UltraEdit)
    described = describe_methods()["ultraedit"]
    assert described["defaults"]["smollm2"]["layers"] == [21, 22, 23, 24, 25] == default_layers(30)
    assert described["defaults"]["generic"]["lr"] == 1e-6
    assert default_layers(30) == [21, 22, 23, 24, 25] and default_layers(4) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("method", "hparams"),
    [
        ("ultraedit", {"layers": [1, 2], "lr": 1e-3}),
        ("memit", {"layers": [1, 2], "v_num_grad_steps": 3, "mom2_corpus": "builtin", "mom2_n_samples": 20,
                   "mom2_max_length": 64, "context_count": 1, "nas": True, "prune": True, "norm_budget": 1.001}),
    ],
)
def test_killed_run_resumes_exactly(tmp_path, monkeypatch, method: str, hparams: dict[str, object]) -> None:
    """Through the runner: stop after one step, resume on a fresh base model, get the uninterrupted run."""
    from seqedit.runner.config import RunConfig
    from seqedit.runner.run import resume_experiment, run_experiment
    from seqedit.runner.store import RunStore

    monkeypatch.delenv("SEQEDIT_DATA_DIR", raising=False)
    monkeypatch.setenv("SEQEDIT_CACHE_DIR", str(tmp_path / "cache"))

    def config(name: str) -> RunConfig:
        return RunConfig.model_validate({
            "model": "tiny-llama", "method": method, "hparams": hparams, "dataset": {"name": "builtin"},
            "num_edits": 6, "batch_size": 2, "checkpoints": {"every": 6},
            "probe": {"texts": 4, "prompts": 4, "max_tokens": 24, "pca_k": 3}, "evaluation": {"batch_size": 8},
            "output_dir": str(tmp_path / name),
        })

    def tiny():
        return build_tiny_model("llama", num_layers=4, hidden=48, seed=3)

    def weights(lm):
        return {n: p.detach().clone() for n, p in lm.model.named_parameters() if "down_proj" in n}

    def requests_rows(run_dir):
        return [{k: v for k, v in r.items() if k != "total_s" and not k.startswith("phase_")}
                for r in RunStore(run_dir).read("requests")]

    full_lm = tiny()
    full = run_experiment(config("full"), lm=full_lm, show_progress=False)
    first = run_experiment(config("parts"), lm=tiny(), show_progress=False, max_steps=1)
    assert (full.status, first.completed_steps) == ("finished", 1)
    resumed_lm = tiny()
    resumed = resume_experiment(tmp_path / "parts", lm=resumed_lm, show_progress=False)
    assert resumed.status == "finished"
    assert requests_rows(full.run_dir) == requests_rows(resumed.run_dir)
    for name, weight in weights(full_lm).items():
        assert torch.equal(weight, weights(resumed_lm)[name]), name
