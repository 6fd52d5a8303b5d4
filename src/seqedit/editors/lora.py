"""LoRA editing through ``peft``: train a low-rank adapter on the edit prompts, then write the merged
weight change into the model and remove the adapter.

The monitors track merged weights, so the edit result is ``ΔW = scale · B A`` per target matrix
(``scale = alpha / rank``), added to the plain weights by :mod:`seqedit.editors.gradient`'s shared
pipeline after ``peft`` has unloaded its wrappers (the original module objects go back in place). ``EditResult.deltas`` is therefore
exactly what was added and the model is a plain transformers model again. The trained factors of the
last call are kept on the editor (:attr:`LoRAEditor.last_factors`) for inspection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import Field

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditorConfig, PhaseTimer
from seqedit.editors.edit_loss import forward_logits, row_nll
from seqedit.editors.gradient import GradientUpdate, LayeredConfig, LayeredGradientEditor, optimise
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch

ADAPTER_NAME = "seqedit_edit"


class LoRAConfig(LayeredConfig):
    """Hyper-parameters of LoRA editing (EasyEdit's defaults: rank 8, alpha 32, lr 5e-3, 70 steps)."""

    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is (alpha / r) · B A.")
    lr: float = Field(5e-3, gt=0, description="Adam learning rate of the factors.")
    steps: int = Field(70, ge=1, description="Maximum number of optimisation steps per apply().")
    stop_loss: float = Field(1e-2, ge=0, description="Stop once the mean target NLL is below this.")
    seed: int = Field(0, description="Seed of the random initialisation of A (B starts at zero).")
    norm_penalty: float = Field(0.0, ge=0, description="lambda of the loss term lambda * sum ‖scale · B A‖_F².")
    max_delta_fro: float | None = Field(
        None, gt=0, description="After every step, rescale B so that ‖scale · B A‖_F is at most this."
    )


@dataclass(frozen=True)
class LoRAFactors:
    """Trained factors of one matrix: ``ΔW = scale · B @ A`` in canonical ``[out, in]`` layout."""

    a: torch.Tensor  # [rank, in]
    b: torch.Tensor  # [out, rank]
    scale: float

    def delta(self) -> torch.Tensor:
        return (self.b @ self.a) * self.scale


class _InjectedLoRA:
    """peft LoRA layers injected into the model for the duration of one edit."""

    def __init__(self, lm: LoadedModel, paths: list[str], cfg: LoRAConfig) -> None:
        from peft import LoraConfig, LoraModel
        from peft.tuners.tuners_utils import cast_adapter_dtype

        transposed = {lm.adapter.is_transposed(p) for p in paths}
        if len(transposed) != 1:
            raise ValueError("LoRA targets must be all Conv1D or all Linear modules")
        config = LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # typed int in peft; floats work
            lora_dropout=0.0,
            bias="none",
            target_modules=paths,
            fan_in_fan_out=transposed.pop(),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.tuner = LoraModel(lm.model, config, ADAPTER_NAME)
        # Train the factors in float32 even when the model runs in bf16/fp16.
        cast_adapter_dtype(lm.model, adapter_name=ADAPTER_NAME, autocast_adapter_dtype=True)
        self.layers = {path: lm.model.get_submodule(path) for path in paths}

    def factor_params(self, path: str) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        layer = self.layers[path]
        return layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight  # type: ignore[index,union-attr]

    def scale(self, path: str) -> float:
        return float(self.layers[path].scaling[ADAPTER_NAME])  # type: ignore[index]

    def canonical_delta(self, path: str) -> torch.Tensor:
        a, b = self.factor_params(path)
        return (b @ a) * self.scale(path)

    def unload(self) -> None:
        self.tuner.unload()


class LoRAEditor(LayeredGradientEditor):
    """LoRA: fit a rank-r adapter on prompt -> target_new, then merge it into the plain weights."""

    name: ClassVar[str] = "lora"
    config_class: ClassVar[type[EditorConfig]] = LoRAConfig
    description: ClassVar[str] = "LoRA (peft) trained on prompt -> target, merged into the weights."

    def __init__(self, config: EditorConfig | None = None) -> None:
        super().__init__(config)
        self.last_factors: dict[str, LoRAFactors] = {}

    @property
    def lora_config(self) -> LoRAConfig:
        assert isinstance(self.config, LoRAConfig)
        return self.config

    def compute_update(
        self,
        lm: LoadedModel,
        requests: Sequence[EditRequest],
        batch: PromptTargetBatch,
        paths: list[str],
        timer: PhaseTimer,
    ) -> GradientUpdate:
        cfg = self.lora_config
        with timer.phase("optimise"):
            injected = _InjectedLoRA(lm, paths, cfg)
            try:
                params = [w for p in paths for w in injected.factor_params(p)]
                for w in params:
                    w.requires_grad_(True)

                def penalty() -> torch.Tensor:
                    return sum(injected.canonical_delta(p).pow(2).sum() for p in paths)  # type: ignore[return-value]

                def cap() -> None:
                    if cfg.max_delta_fro is not None:
                        self._cap_delta_norms(injected, paths, cfg.max_delta_fro)

                trace = optimise(
                    self.name, params, lambda: row_nll(forward_logits(lm, batch), batch).mean(), lr=cfg.lr,
                    max_steps=cfg.steps, stop_loss=cfg.stop_loss, norm_penalty=cfg.norm_penalty, penalty=penalty,
                    after_step=cap,
                )
                factors = {
                    p: LoRAFactors(
                        a=injected.factor_params(p)[0].detach().clone(),
                        b=injected.factor_params(p)[1].detach().clone(),
                        scale=injected.scale(p),
                    )
                    for p in paths
                }
            finally:
                injected.unload()
        self.last_factors = factors
        return GradientUpdate(
            deltas={p: f.delta() for p, f in factors.items()},
            info={"layers": self.layers_of(lm), "paths": paths, "rank": cfg.rank, "alpha": cfg.alpha},
            trace=trace,
        )

    @staticmethod
    @torch.no_grad()
    def _cap_delta_norms(injected: _InjectedLoRA, paths: list[str], max_norm: float) -> None:
        # ΔW is linear in B, so scaling B by c/‖ΔW‖ projects ΔW onto the Frobenius ball exactly.
        for path in paths:
            norm = float(injected.canonical_delta(path).double().norm())
            if norm > max_norm:
                injected.factor_params(path)[1].mul_(max_norm / norm)
