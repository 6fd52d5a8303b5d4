"""LoRA editing through ``peft``: train a low-rank adapter on the edit prompts, then write the merged
weight change into the model and remove the adapter.

The monitors track merged weights, so the edit result is ``ΔW = scale · B A`` per target matrix
(``scale = alpha / rank``), added to the plain weights with :func:`commit_deltas` after ``peft`` has
unloaded its wrappers (the original module objects go back in place). ``EditResult.deltas`` is therefore
exactly what was added and the model is a plain transformers model again. The trained factors of the
last call are kept on the editor (:attr:`LoRAEditor.last_factors`) for inspection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import Field

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
from seqedit.editors.finetune import default_layers, edited_paths
from seqedit.models.adapters.base import MatrixKind
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch

ADAPTER_NAME = "seqedit_edit"


class LoRAConfig(EditorConfig):
    """Hyper-parameters of LoRA editing (EasyEdit's defaults: rank 8, alpha 32, lr 5e-3, 70 steps)."""

    layers: list[int] | None = Field(None, description="Layers with adapted matrices; None: model default.")
    kinds: list[MatrixKind] = Field(["mlp.out_proj"], min_length=1, description="Matrix kinds adapted in each layer.")
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


class LoRAEditor(Editor):
    """LoRA: fit a rank-r adapter on prompt -> target_new, then merge it into the plain weights."""

    name: ClassVar[str] = "lora"
    config_class: ClassVar[type[EditorConfig]] = LoRAConfig
    description: ClassVar[str] = "LoRA (peft) trained on prompt -> target, merged into the weights."

    def __init__(self, config: EditorConfig | None = None) -> None:
        super().__init__(config)
        self.last_factors: dict[str, LoRAFactors] = {}

    @classmethod
    def default_config(cls, lm: LoadedModel | None = None, profile: str | None = None) -> EditorConfig:
        config = super().default_config(lm, profile)
        assert isinstance(config, LoRAConfig)
        if lm is not None and config.layers is None:
            config.layers = default_layers(lm.adapter.num_layers, single=False)
        return config

    @property
    def lora_config(self) -> LoRAConfig:
        assert isinstance(self.config, LoRAConfig)
        return self.config

    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditResult:
        cfg = self.lora_config
        layers = cfg.layers if cfg.layers is not None else default_layers(lm.adapter.num_layers, single=False)
        paths = edited_paths(lm.adapter, layers, cfg.kinds)
        timer = PhaseTimer()
        batch = request_batch(lm, requests)
        with frozen_eval(lm.model):
            with timer.phase("init"):
                init_probs = target_probabilities(lm, batch)
            with timer.phase("optimise"):
                injected = _InjectedLoRA(lm, paths, cfg)
                try:
                    steps, losses = self._optimise(lm, injected, paths, batch)
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
            with timer.phase("commit"):
                committed, originals = commit_deltas(lm.adapter, {p: f.delta() for p, f in factors.items()})
            with timer.phase("evaluate"):
                final_probs = target_probabilities(lm, batch)
        self.last_factors = factors
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
                "layers": list(layers), "paths": paths, "rank": cfg.rank, "alpha": cfg.alpha, "steps": steps,
                "loss_trace": losses,
                "delta_fro": {p: float(f.delta().double().norm()) for p, f in factors.items()},
            },
        )

    def _optimise(
        self, lm: LoadedModel, injected: _InjectedLoRA, paths: list[str], batch: PromptTargetBatch
    ) -> tuple[int, list[float]]:
        cfg = self.lora_config
        params = [w for p in paths for w in injected.factor_params(p)]
        for w in params:
            w.requires_grad_(True)
        optimiser = torch.optim.Adam(params, lr=cfg.lr)
        losses: list[float] = []
        steps = 0
        for _ in range(cfg.steps):
            optimiser.zero_grad(set_to_none=True)
            nll = row_nll(forward_logits(lm, batch), batch).mean()
            value = float(nll.detach())
            losses.append(value)
            if not math.isfinite(value):
                raise EditError(f"lora: the loss became {value} after {steps} steps; nothing was changed")
            if value < cfg.stop_loss:
                break
            loss = nll
            if cfg.norm_penalty > 0:
                loss = loss + cfg.norm_penalty * sum(injected.canonical_delta(p).pow(2).sum() for p in paths)
            loss.backward()
            optimiser.step()
            steps += 1
            if cfg.max_delta_fro is not None:
                self._cap_delta_norms(injected, paths, cfg.max_delta_fro)
        return steps, losses

    @staticmethod
    @torch.no_grad()
    def _cap_delta_norms(injected: _InjectedLoRA, paths: list[str], max_norm: float) -> None:
        # ΔW is linear in B, so scaling B by c/‖ΔW‖ projects ΔW onto the Frobenius ball exactly.
        for path in paths:
            norm = float(injected.canonical_delta(path).double().norm())
            if norm > max_norm:
                injected.factor_params(path)[1].mul_(max_norm / norm)
