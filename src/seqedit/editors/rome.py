"""ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT") as r-ROME (Gupta et al. 2024,
"Rebuilding ROME: Resolving Model Collapse during Sequential Model Editing").

One fact at a time, one layer: the rank-one update ``ΔW = r (C⁻¹k̄)ᵀ / (k̄ᵀ C⁻¹ k̄)`` is the smallest update
(in the metric ``C = λ_p E[k kᵀ]``; the scale cancels) with ``ΔW k̄ = r``. r-ROME's fix: one key ``k̄`` -- the
plain mean of the subject's key over the context templates (ROME's ``compute_u``) -- in the direction, in
the normaliser and in the residual ``r = v* - W k̄``, where ``v* = W k_bare + (z - h)`` is the value that
moves the bare prompt's hidden state ``h`` to its target ``z``. The original code divided by, and measured
the residual at, the bare prompt's key, which blew up some updates (the "disabling edits").
``residual_at: bare_prompt`` keeps the residual of the original code (``r = z - h``) for comparison.
Optional: the norm penalty (``C + λ_n I``) and memory of earlier edits' keys (``C + K_p K_pᵀ``); both off
by default, as in r-ROME.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

from seqedit.editors.base import EditorConfig
from seqedit.editors.keys import KeyAverage
from seqedit.editors.locate import LayerContext, LocateEditEditor, PreservingConfig
from seqedit.editors.solvers import rank_one_update
from seqedit.models.loading import LoadedModel


class ROMEConfig(PreservingConfig):
    past_edit_memory: bool = Field(False, description="Preserve the keys of earlier edits (off in r-ROME).")
    key_average: KeyAverage = Field("mean", description="Key averaging over templates (r-ROME: plain mean).")
    residual_at: Literal["mean_key", "bare_prompt"] = Field(
        "mean_key",
        description="Where the residual is measured: at the averaged key, r = v* - W k̄ (r-ROME), or on the "
        "bare prompt, r = z - h (the original ROME code).",
    )

    @field_validator("layers")
    @classmethod
    def _one_layer(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(value) != 1:
            raise ValueError("ROME edits exactly one layer")
        return value


class ROME(LocateEditEditor):
    name = "rome"
    config_class: ClassVar[type[EditorConfig]] = ROMEConfig
    description = "ROME (r-ROME): rank-one update of one MLP layer, one fact at a time (Meng et al. 2022)"
    intended_batch_mode = "sequential"
    one_fact_at_a_time = True

    def residual_correction(
        self, lm: LoadedModel, layer: int, keys: torch.Tensor, bare_keys: torch.Tensor
    ) -> torch.Tensor | float:
        assert isinstance(self.config, ROMEConfig)
        if self.config.residual_at == "bare_prompt":
            return 0.0
        weight = lm.adapter.weight(lm.adapter.mlp_out_proj(layer)).to(device=keys.device, dtype=torch.float64)
        return (bare_keys - keys) @ weight.T

    def solve_layer(self, keys: torch.Tensor, resid: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        assert isinstance(self.config, ROMEConfig)
        if keys.shape[0] != 1:
            raise ValueError("ROME's rank-one update takes one fact")
        preserve = self.preservation(ctx, self.config.mom2_update_weight)
        if self.config.norm_lambda:
            preserve = preserve + self.config.norm_lambda * torch.eye(
                preserve.shape[0], dtype=preserve.dtype, device=preserve.device
            )
        return rank_one_update(keys[0], resid[0], preserve)
