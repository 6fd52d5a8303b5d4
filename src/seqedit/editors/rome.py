"""ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT") as r-ROME (Gupta et al. 2024,
"Rebuilding ROME: Resolving Model Collapse during Sequential Model Editing").

One fact at a time, one layer: the rank-one update ``ΔW = r (C⁻¹k)ᵀ / (kᵀ C⁻¹ k)`` is the smallest update
(in the metric ``C = λ_p E[k kᵀ]``; the scale cancels) that maps the fact's key ``k`` to its target. r-ROME's
fix: the key ``k`` is the *same* context-averaged key in the direction ``C⁻¹k`` and in the normaliser
``kᵀC⁻¹k`` (the original code divided by the key of the bare prompt, which blew up some updates: the
"disabling edits"), and the residual ``r`` is the target minus the current hidden state on the bare prompt.
Optional: the norm penalty (``C + λ_n I``) and memory of earlier edits' keys (``C + K_p K_pᵀ``); both off
by default, as in r-ROME.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, field_validator

from seqedit.editors.base import EditorConfig
from seqedit.editors.locate import LayerContext, LocateEditEditor, PreservingConfig
from seqedit.editors.solvers import rank_one_update


class ROMEConfig(PreservingConfig):
    past_edit_memory: bool = Field(False, description="Preserve the keys of earlier edits (off in r-ROME).")

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
