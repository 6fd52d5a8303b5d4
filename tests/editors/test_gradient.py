"""The shared pipeline of the gradient editors (editors/gradient.py): the Adam loop's stopping rule and
trace, and the base editor's commit: exactly the method's deltas, exact undo, nothing written on failure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import pytest
import torch

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditError, EditorConfig, PhaseTimer
from seqedit.editors.gradient import GradientEditor, GradientUpdate, OptimiseTrace, edited_paths, optimise
from seqedit.models.loading import LoadedModel
from seqedit.models.tiny import build_tiny_model
from seqedit.models.tokens import PromptTargetBatch


def _quadratic(x: torch.Tensor, centre: float) -> torch.Tensor:
    return (x - centre).pow(2).sum()


def test_optimise_records_one_loss_per_step_and_stops_below_stop_loss() -> None:
    x = torch.zeros(3, requires_grad=True)
    trace = optimise("quad", [x], lambda: _quadratic(x, 1.0), lr=0.1, max_steps=500, stop_loss=1e-2)
    # The loop measures the loss before each step; the last measurement stopped it.
    assert len(trace.losses) == trace.steps + 1 and trace.losses[-1] < 1e-2 <= min(trace.losses[:-1])
    assert 0 < trace.steps < 500
    capped = torch.zeros(3, requires_grad=True)
    short = optimise("quad", [capped], lambda: _quadratic(capped, 1.0), lr=0.1, max_steps=4, stop_loss=0.0)
    assert short == OptimiseTrace(4, short.losses) and len(short.losses) == 4


def test_optimise_penalty_and_projection_shape_the_solution() -> None:
    # Minimising (x - 1)² + λ x² per entry has its minimum at 1 / (1 + λ).
    x = torch.zeros(2, requires_grad=True)
    optimise("quad", [x], lambda: _quadratic(x, 1.0), lr=0.05, max_steps=2000, stop_loss=0.0, norm_penalty=1.0,
             penalty=lambda: x.pow(2).sum())
    assert torch.allclose(x.detach(), torch.full((2,), 0.5), atol=1e-3)
    y = torch.zeros(2, requires_grad=True)

    def clamp() -> None:
        with torch.no_grad():
            y.clamp_(max=0.25)

    optimise("quad", [y], lambda: _quadratic(y, 1.0), lr=0.05, max_steps=200, stop_loss=0.0, after_step=clamp)
    assert float(y.detach().max()) == 0.25


def test_optimise_refuses_a_non_finite_loss() -> None:
    x = torch.zeros(1, requires_grad=True)
    with pytest.raises(EditError, match="quad: the loss became nan after 0 steps"):
        optimise("quad", [x], lambda: x.sum() * float("nan"), lr=0.1, max_steps=3, stop_loss=0.0)


def _request() -> EditRequest:
    return EditRequest.model_validate(
        {"case_id": "1", "subject": "Zorblat", "prompt": "The capital of {} is", "target_new": "Paris"}
    )


class _FixedUpdate(GradientEditor):
    """A gradient 'method' whose update is given: exercises only the shared pipeline."""

    name: ClassVar[str] = "fixed"
    config_class: ClassVar[type[EditorConfig]] = EditorConfig

    def __init__(self, deltas: dict[str, torch.Tensor]) -> None:
        super().__init__(EditorConfig())
        self.deltas = deltas

    def paths_for(self, lm: LoadedModel, timer: PhaseTimer) -> list[str]:
        return list(self.deltas)

    def compute_update(
        self, lm: LoadedModel, requests: Sequence[EditRequest], batch: PromptTargetBatch, paths: list[str],
        timer: PhaseTimer,
    ) -> GradientUpdate:
        assert not any(p.requires_grad for p in lm.model.parameters())  # called with the model frozen
        return GradientUpdate(deltas=self.deltas, info={"paths": paths}, trace=OptimiseTrace(2, [3.0, 2.0, 1.0]))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_base_commits_exactly_the_update_and_undoes_it_bit_for_bit(family: Literal["llama", "gpt2"]) -> None:
    lm = build_tiny_model(family, num_layers=2, hidden=32, seed=4)
    (path,) = edited_paths(lm.adapter, [1], ["mlp.out_proj"])
    out_dim, in_dim = lm.adapter.weight(path).shape
    torch.manual_seed(0)
    delta = 1e-2 * torch.randn(out_dim, in_dim)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    request = _request()
    result = _FixedUpdate({path: delta}).apply(lm, [request])
    name = f"{path}.weight"
    assert list(result.deltas) == [name]
    change = lm.model.get_parameter(name).detach() - before[name]
    assert torch.allclose(change, result.deltas[name], rtol=0, atol=1e-6 * float(before[name].abs().max()))
    assert result.info["delta_fro"][path] == pytest.approx(float(delta.double().norm()), rel=1e-12)
    assert result.info["steps"] == 2 and result.info["loss_trace"] == [3.0, 2.0, 1.0]
    assert result.request_stats[0]["steps"] == 2 and result.request_stats[0]["final_loss"] == 1.0
    assert set(result.timings) == {"init", "commit", "evaluate"}
    assert {n: p.requires_grad for n, p in lm.model.named_parameters()} == flags
    result.undo(lm.model)
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


def test_base_writes_nothing_when_an_update_is_not_finite() -> None:
    lm = build_tiny_model("llama", num_layers=2, hidden=32, seed=4)
    paths = edited_paths(lm.adapter, [0, 1], ["mlp.out_proj"])
    good = torch.ones(lm.adapter.weight(paths[0]).shape)
    bad = torch.full(lm.adapter.weight(paths[1]).shape, float("inf"))
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    request = _request()
    with pytest.raises(EditError, match="NaN or Inf"):
        _FixedUpdate({paths[0]: good, paths[1]: bad}).apply(lm, [request])
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
