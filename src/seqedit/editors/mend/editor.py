"""``method: mend``: edit with a trained MEND hypernetwork (see ``seqedit mend train``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditorConfig, PhaseTimer
from seqedit.editors.gradient import GradientEditor, GradientUpdate
from seqedit.editors.mend.hypernet import MendHypernet, default_checkpoint_dir, gradient_factors
from seqedit.editors.weight_deltas import project_fro_ball_
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch


class MendConfig(EditorConfig):
    """Settings of MEND editing; the networks themselves come from a checkpoint."""

    checkpoint: Path | None = Field(
        None,
        description="Directory with mend.safetensors + mend.json; None: the default location for the model "
        "(<cache>/mend/<model>), where `seqedit mend train` saves.",
    )
    edit_lr_scale: float = Field(1.0, gt=0, description="Multiplies the learned step sizes alpha.")
    max_delta_fro: float | None = Field(
        None, gt=0, description="Project each ΔW onto the Frobenius ball of this radius (norm-aware option)."
    )


class MendEditor(GradientEditor):
    """MEND: the fine-tuning gradient of the edit prompts, transformed by trained per-matrix networks."""

    name: ClassVar[str] = "mend"
    config_class: ClassVar[type[EditorConfig]] = MendConfig
    description: ClassVar[str] = "MEND hypernetwork editor (Mitchell et al. 2022); needs a trained checkpoint."

    def __init__(self, config: EditorConfig | None = None, hypernet: MendHypernet | None = None) -> None:
        super().__init__(config)
        self._hypernet = hypernet

    @property
    def mend_config(self) -> MendConfig:
        assert isinstance(self.config, MendConfig)
        return self.config

    def hypernet_for(self, lm: LoadedModel) -> MendHypernet:
        """The hypernetwork (loaded once from the checkpoint), on the model's device, checked against it."""
        if self._hypernet is None:
            folder = self.mend_config.checkpoint or default_checkpoint_dir(lm.name)
            self._hypernet = MendHypernet.load(folder, device=lm.device)
        self._hypernet.check_fits(lm.adapter)
        self._hypernet.to(lm.device).eval()
        return self._hypernet

    def paths_for(self, lm: LoadedModel, timer: PhaseTimer) -> list[str]:
        with timer.phase("load"):
            hypernet = self.hypernet_for(lm)
        return list(hypernet.spec.paths)

    def compute_update(
        self,
        lm: LoadedModel,
        requests: Sequence[EditRequest],
        batch: PromptTargetBatch,
        paths: list[str],
        timer: PhaseTimer,
    ) -> GradientUpdate:
        cfg = self.mend_config
        hypernet = self._hypernet
        assert hypernet is not None  # loaded (and checked against the model) by paths_for
        with timer.phase("gradients"):
            factors, _logits = gradient_factors(lm, paths, batch, range(len(requests)))
        with timer.phase("network"), torch.no_grad():
            updates = {p: u * cfg.edit_lr_scale for p, u in hypernet.updates(factors).items()}
            if cfg.max_delta_fro is not None:
                for update in updates.values():
                    project_fro_ball_(update, cfg.max_delta_fro)
        return GradientUpdate(
            deltas=updates,
            info={
                "paths": list(paths),
                "checkpoint_model": hypernet.spec.model,
                "gradient_tokens": {p: int(x.shape[0]) for p, (x, _d) in factors.items()},
                "edit_lrs": [float(v) * cfg.edit_lr_scale for v in hypernet.edit_lrs.detach()],
            },
        )
