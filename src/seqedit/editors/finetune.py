"""Fine-tuning editors: FT-L (one MLP output projection, L-inf constrained, as the ROME paper's baseline)
and FT (several matrices, unconstrained unless asked).

Both run one loop: Adam on a float32 delta per edited matrix (see :mod:`seqedit.editors.weight_deltas`),
loss = mean target NLL of ``prompt -> target_new`` over the requests (+ ``norm_penalty * Σ‖ΔW‖²``), stop
early once the NLL is below ``stop_loss``. After every step FT-L clamps ``W - W_orig`` to ±``norm_constraint``
and the optional ``max_delta_fro`` projects each delta onto a Frobenius ball (the norm-aware options, to
compare with ENCORE). The loop, the commit and the result are :mod:`seqedit.editors.gradient`'s, so
``EditResult.deltas`` is exactly what was added.

ROME's FT-L settings for GPT-2 XL are layer 17 of 48, 25 Adam steps at lr 5e-4 and epsilon 5e-4. The
embedded SmolLM2-135M has entries about 10x larger (mean |w| of ``down_proj`` ≈ 0.15): with ROME's
settings FT-L changed none of 10 CounterFact facts (efficacy 0.2, as unedited). SmolLM2's profile
(:mod:`seqedit.editors.profiles`) holds the values measured with ``benchmarks/grad_editors_counterfact.py``:
FT-L epsilon 5e-3 at lr 5e-3; FT at lr 1e-3 (lr 5e-3 also reaches every target but with 3x the update norm
and neighbourhood score 0.3 against 0.6). FT-L's class defaults are ROME's; FT's lr has no paper value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field, model_validator

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditorConfig, EditResult, PhaseTimer
from seqedit.editors.edit_loss import forward_logits, row_nll
from seqedit.editors.gradient import GradientUpdate, LayeredConfig, LayeredGradientEditor, optimise
from seqedit.editors.weight_deltas import (
    added_deltas,
    clamp_linf_,
    project_fro_ball_,
    squared_fro,
    zero_deltas,
)
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch


class FineTuneConfig(LayeredConfig):
    """Hyper-parameters of the fine-tuning editors."""

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


class FineTuneEditor(LayeredGradientEditor):
    """FT: fine-tune the chosen matrices of several layers on the edit prompts."""

    name: ClassVar[str] = "ft"
    config_class: ClassVar[type[EditorConfig]] = FineTuneConfig
    description: ClassVar[str] = "Fine-tuning of MLP projections of several layers on prompt -> target."
    single_layer: ClassVar[bool] = False

    @property
    def ft_config(self) -> FineTuneConfig:
        assert isinstance(self.config, FineTuneConfig)
        return self.config

    def compute_update(
        self,
        lm: LoadedModel,
        requests: Sequence[EditRequest],
        batch: PromptTargetBatch,
        paths: list[str],
        timer: PhaseTimer,
    ) -> GradientUpdate:
        cfg = self.ft_config
        deltas = zero_deltas(lm.adapter, paths)

        def target_nll() -> torch.Tensor:  # the model with the current deltas added
            with added_deltas(lm.adapter, deltas):
                return row_nll(forward_logits(lm, batch), batch).mean()

        def constrain() -> None:
            for delta in deltas.values():
                if cfg.norm_constraint is not None:
                    clamp_linf_(delta, cfg.norm_constraint)
                if cfg.max_delta_fro is not None:
                    project_fro_ball_(delta, cfg.max_delta_fro)

        with timer.phase("optimise"):
            trace = optimise(
                self.name, list(deltas.values()), target_nll, lr=cfg.lr, max_steps=cfg.steps,
                stop_loss=cfg.stop_loss, norm_penalty=cfg.norm_penalty, penalty=lambda: squared_fro(deltas),
                after_step=constrain,
            )
        return GradientUpdate(
            deltas=dict(deltas),
            info={
                "layers": self.layers_of(lm),
                "paths": paths,
                "delta_linf": {p: float(d.detach().abs().max()) for p, d in deltas.items()},
            },
            trace=trace,
        )


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
