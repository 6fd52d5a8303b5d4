"""Fine-tuning editors: FT-L (one MLP output projection, L-inf constrained, as the ROME paper's baseline)
and FT (several matrices, unconstrained unless asked).

Both run one loop: Adam on a float32 delta per edited matrix (see :mod:`seqedit.editors.weight_deltas`),
loss = mean target NLL of ``prompt -> target_new`` over the requests (+ ``norm_penalty * Σ‖ΔW‖²``), stop
early once the NLL is below ``stop_loss``. After every step FT-L clamps ``W - W_orig`` to ±``norm_constraint``
and the optional ``max_delta_fro`` projects each delta onto a Frobenius ball (the norm-aware options, to
compare with ENCORE). The final deltas are written with :func:`commit_deltas`, so ``EditResult.deltas`` is
exactly what was added.

ROME's FT-L settings for GPT-2 XL are layer 17 of 48, 25 Adam steps at lr 5e-4 and epsilon 5e-4. The
embedded SmolLM2-135M has entries about 10x larger (mean |w| of ``down_proj`` ≈ 0.15): with ROME's
settings FT-L changed none of 10 CounterFact facts (efficacy 0.2, as unedited). SmolLM2's profile
(:mod:`seqedit.editors.profiles`) holds the values measured with ``benchmarks/grad_editors_counterfact.py``:
FT-L epsilon 5e-3 at lr 5e-3; FT at lr 1e-3 (lr 5e-3 also reaches every target but with 3x the update norm
and neighbourhood score 0.3 against 0.6). FT-L's class defaults are ROME's; FT's lr has no paper value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field, model_validator

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditError, Editor, EditorConfig, EditResult, PhaseTimer, commit_deltas
from seqedit.editors.edit_loss import (
    forward_logits,
    frozen_eval,
    probability_stats,
    request_batch,
    row_nll,
    target_probabilities,
)
from seqedit.editors.weight_deltas import (
    added_deltas,
    clamp_linf_,
    project_fro_ball_,
    squared_fro,
    zero_deltas,
)
from seqedit.models.adapters.base import ArchitectureAdapter, MatrixKind
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch


class FineTuneConfig(EditorConfig):
    """Hyper-parameters of the fine-tuning editors."""

    layers: list[int] | None = Field(
        None, description="Layers whose matrices are trained (negative counts from the top); None: model default."
    )
    kinds: list[MatrixKind] = Field(["mlp.out_proj"], min_length=1, description="Matrix kinds trained in each layer.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    steps: int = Field(40, ge=1, description="Maximum number of optimisation steps per apply().")
    stop_loss: float = Field(1e-2, ge=0, description="Stop once the mean target NLL is below this.")
    norm_constraint: float | None = Field(
        None, gt=0, description="L-inf bound on every entry of W - W_orig (FT-L's epsilon); None: no bound."
    )
    norm_penalty: float = Field(0.0, ge=0, description="lambda of the loss term lambda * sum ‖ΔW‖_F².")
    max_delta_fro: float | None = Field(
        None, gt=0, description="Project each ΔW onto the Frobenius ball of this radius after every step."
    )


class FTLConfig(FineTuneConfig):
    """FT-L: one layer's MLP output projection with an L-inf constraint. Class defaults: ROME's GPT-2 XL
    values; the SmolLM2 profile's are 10x larger (see the module docstring)."""

    lr: float = Field(5e-4, gt=0, description="Adam learning rate (ROME's, for GPT-2 XL; SmolLM2: 5e-3).")
    norm_constraint: float | None = Field(
        5e-4, gt=0, description="L-inf bound on every entry of W - W_orig (ROME's, GPT-2 XL; SmolLM2: 5e-3)."
    )

    @model_validator(mode="after")
    def _constrained(self) -> FTLConfig:
        # Checked when the settings are made, so a run is refused before it starts rather than at step 1.
        if self.norm_constraint is None:
            raise ValueError("ft-l needs norm_constraint (its L-inf epsilon); use method 'ft' for unconstrained tuning")
        return self


def default_layers(num_layers: int, *, single: bool) -> list[int]:
    """FT-L: one layer at ~1/6 of the depth, where locate-and-edit methods edit (layer 5 of SmolLM2's 30);
    FT: three consecutive layers starting there. Measured on SmolLM2-135M (see the module docstring)."""
    first = max(0, round(num_layers / 6))
    if single:
        return [first]
    return list(range(first, min(num_layers, first + 3)))


def edited_paths(adapter: ArchitectureAdapter, layers: Sequence[int], kinds: Sequence[MatrixKind]) -> list[str]:
    paths: list[str] = []
    for layer in layers:
        for kind in kinds:
            site = adapter.site(kind, layer)
            paths.extend([site] if isinstance(site, str) else site)
    if len(set(paths)) != len(paths):
        raise ValueError(f"layers {list(layers)} name the same matrix twice")
    return paths


class FineTuneEditor(Editor):
    """FT: fine-tune the chosen matrices of several layers on the edit prompts."""

    name: ClassVar[str] = "ft"
    config_class: ClassVar[type[EditorConfig]] = FineTuneConfig
    description: ClassVar[str] = "Fine-tuning of MLP projections of several layers on prompt -> target."
    single_layer: ClassVar[bool] = False

    @classmethod
    def default_config(cls, lm: LoadedModel | None = None, profile: str | None = None) -> EditorConfig:
        config = super().default_config(lm, profile)
        assert isinstance(config, FineTuneConfig)
        if lm is not None and config.layers is None:
            config.layers = default_layers(lm.adapter.num_layers, single=cls.single_layer)
        return config

    @property
    def ft_config(self) -> FineTuneConfig:
        assert isinstance(self.config, FineTuneConfig)
        return self.config

    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditResult:
        cfg = self.ft_config
        layers = cfg.layers if cfg.layers is not None else default_layers(lm.adapter.num_layers, single=self.single_layer)
        paths = edited_paths(lm.adapter, layers, cfg.kinds)
        timer = PhaseTimer()
        batch = request_batch(lm, requests)
        with frozen_eval(lm.model):
            with timer.phase("init"):
                init_probs = target_probabilities(lm, batch)
            with timer.phase("optimise"):
                deltas, steps, losses = self._optimise(lm, paths, batch)
            with timer.phase("commit"):
                committed, originals = commit_deltas(lm.adapter, {p: d.detach() for p, d in deltas.items()})
            with timer.phase("evaluate"):
                final_probs = target_probabilities(lm, batch)
        stats = probability_stats(
            requests, init_probs, final_probs, steps=steps, final_loss=losses[-1] if losses else None
        )
        return EditResult(
            method=self.name,
            deltas=committed,
            originals=originals,
            timings=timer.seconds,
            request_stats=stats,
            info={
                "layers": list(layers),
                "paths": paths,
                "steps": steps,
                "loss_trace": losses,
                "delta_fro": {p: float(d.detach().double().norm()) for p, d in deltas.items()},
                "delta_linf": {p: float(d.detach().abs().max()) for p, d in deltas.items()},
            },
        )

    def _optimise(
        self, lm: LoadedModel, paths: list[str], batch: PromptTargetBatch
    ) -> tuple[dict[str, torch.nn.Parameter], int, list[float]]:
        cfg = self.ft_config
        deltas = zero_deltas(lm.adapter, paths)
        optimiser = torch.optim.Adam(list(deltas.values()), lr=cfg.lr)
        losses: list[float] = []
        steps = 0
        for _ in range(cfg.steps):
            optimiser.zero_grad(set_to_none=True)
            with added_deltas(lm.adapter, deltas):
                nll = row_nll(forward_logits(lm, batch), batch).mean()
            value = float(nll.detach())
            losses.append(value)
            if not math.isfinite(value):
                raise EditError(f"{self.name}: the loss became {value} after {steps} steps; nothing was changed")
            if value < cfg.stop_loss:
                break
            loss = nll + cfg.norm_penalty * squared_fro(deltas) if cfg.norm_penalty > 0 else nll
            loss.backward()
            optimiser.step()
            steps += 1
            for delta in deltas.values():
                if cfg.norm_constraint is not None:
                    clamp_linf_(delta, cfg.norm_constraint)
                if cfg.max_delta_fro is not None:
                    project_fro_ball_(delta, cfg.max_delta_fro)
        return deltas, steps, losses


class FTLEditor(FineTuneEditor):
    """FT-L: constrained fine-tuning of one layer's MLP output projection (the ROME paper's baseline)."""

    name: ClassVar[str] = "ft-l"
    config_class: ClassVar[type[EditorConfig]] = FTLConfig
    description: ClassVar[str] = "Fine-tuning of one MLP output projection with an L-inf bound on W - W_orig."
    single_layer: ClassVar[bool] = True

    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditResult:
        cfg = self.ft_config
        if cfg.norm_constraint is None:
            raise ValueError("ft-l needs norm_constraint (its L-inf epsilon); use method 'ft' for unconstrained tuning")
        return super().apply(lm, requests)
