"""AlphaEdit (Fang et al. 2025, "AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models").

The update is projected onto the (approximate) null space of the preserved keys, so the outputs of the
preserved knowledge do not move: ``P = Û Ûᵀ`` over the eigenvectors of ``E[k kᵀ]`` with eigenvalue below
``nullspace_threshold``. With the keys of all earlier edits ``K_p`` accumulated on the editor (``past_edit_memory``,
on by default; off, ``K_p`` is empty),

    ΔW = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + λ I)⁻¹

(solved as the transposed system of the released code, with ``λ`` = ``norm_lambda``, their ``L2``).
Defaults: threshold 2e-2 and λ = 10 as released for Llama-3-8B; for the embedded model see docs/editors.md
("AlphaEdit's threshold"): thresholds tuned for Llama-3-8B do not transfer unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from seqedit.editors.base import EditorConfig
from seqedit.editors.locate import LayerContext, LocateEditConfig, LocateEditEditor
from seqedit.editors.solvers import NullSpace, null_space_projector, null_space_update


class AlphaEditConfig(LocateEditConfig):
    nullspace_threshold: float = Field(2e-2, gt=0, description="Eigenvalues of E[kkᵀ] below this span the null space.")
    norm_lambda: float = Field(10.0, gt=0, description="λ of the ‖ΔW P‖² term (AlphaEdit's L2).")
    past_edit_memory: bool = Field(
        True,
        description="Accumulate the keys of past edits (K_p in AlphaEdit's objective, as released); False: each "
        "batch is solved against the null space alone (an ablation; earlier edits' keys are not preserved).",
    )


class AlphaEdit(LocateEditEditor):
    name = "alphaedit"
    config_class: ClassVar[type[EditorConfig]] = AlphaEditConfig
    description = "AlphaEdit: MEMIT-style update projected onto the null space of preserved keys (Fang et al. 2025)"
    intended_batch_mode = "batch"

    def __init__(self, config: EditorConfig | None = None) -> None:
        super().__init__(config)
        self._projectors: dict[tuple[Any, ...], NullSpace] = {}

    def projector(self, ctx: LayerContext) -> NullSpace:
        assert isinstance(self.config, AlphaEditConfig)
        if ctx.moment is None:
            raise ValueError("AlphaEdit needs key statistics")
        key = (ctx.layer, ctx.moment.key.digest(), self.config.nullspace_threshold, str(ctx.device))
        if key not in self._projectors:
            space = null_space_projector(ctx.moment.moment.to(ctx.device), self.config.nullspace_threshold)
            # Keep the projector in float32: it is d_mlp x d_mlp per layer (large for 8B models).
            self._projectors[key] = NullSpace(
                space.projector.float(), space.dim, space.threshold, space.max_eigenvalue
            )
        return self._projectors[key]

    def solve_layer(self, keys: torch.Tensor, resid: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
        assert isinstance(self.config, AlphaEditConfig)
        space = self.projector(ctx)
        return null_space_update(keys, resid, space.projector, ctx.memory, self.config.norm_lambda)

    def layer_info(self, ctx: LayerContext) -> dict[str, Any]:
        space = self.projector(ctx)
        return {"null_space_dim": space.dim, "null_space_fraction": space.dim / space.projector.shape[0]}
