"""The shared pipeline of the gradient editors (FT-L, FT, LoRA, MEND).

Each method computes canonical ``[out, in]`` weight changes from the gradient of the edit prompts' target
NLL, in its own way (Adam on dense deltas, Adam on LoRA factors, a trained hypernetwork). Everything around
that is the same and lives here, as :mod:`seqedit.editors.locate` does for the locate-and-edit methods:
:class:`GradientEditor.apply` measures the targets' probabilities, asks the method for its
:class:`GradientUpdate`, writes it with :func:`~seqedit.editors.base.commit_deltas` (so the result's deltas
are exactly what was added and its undo is exact), measures again and builds the :class:`EditResult`.
:func:`optimise` is the Adam loop FT and LoRA share; :class:`LayeredGradientEditor` resolves the
``layers`` / ``kinds`` settings they share.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import Field

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditError, Editor, EditorConfig, EditResult, PhaseTimer, commit_deltas
from seqedit.editors.edit_loss import frozen_eval, probability_stats, request_batch, target_probabilities
from seqedit.models.adapters.base import ArchitectureAdapter, MatrixKind
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch


@dataclass
class OptimiseTrace:
    """Adam steps taken and the NLL measured before each step (plus the one that stopped the loop)."""

    steps: int
    losses: list[float]


@dataclass
class GradientUpdate:
    """What a gradient method computed for one apply(): canonical ``[out, in]`` deltas keyed by module
    path, the method's own figures for ``EditResult.info`` and, for optimised methods, its loss trace."""

    deltas: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    trace: OptimiseTrace | None = None


def optimise(
    name: str,
    params: Sequence[torch.Tensor],
    target_nll: Callable[[], torch.Tensor],
    *,
    lr: float,
    max_steps: int,
    stop_loss: float,
    norm_penalty: float = 0.0,
    penalty: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
) -> OptimiseTrace:
    """Adam on ``params`` minimising ``target_nll() + norm_penalty * penalty()``.

    Stops early once the NLL is below ``stop_loss``; ``after_step`` runs after every step (the
    projections onto a norm ball). A non-finite loss raises :class:`EditError` before any weight is
    written, so a diverging edit changes nothing.
    """
    optimiser = torch.optim.Adam(list(params), lr=lr)
    losses: list[float] = []
    steps = 0
    for _ in range(max_steps):
        optimiser.zero_grad(set_to_none=True)
        nll = target_nll()
        value = float(nll.detach())
        losses.append(value)
        if not math.isfinite(value):
            raise EditError(f"{name}: the loss became {value} after {steps} steps; nothing was changed")
        if value < stop_loss:
            break
        loss = nll + norm_penalty * penalty() if penalty is not None and norm_penalty > 0 else nll
        loss.backward()
        optimiser.step()
        steps += 1
        if after_step is not None:
            after_step()
    return OptimiseTrace(steps, losses)


class GradientEditor(Editor):
    """An editor whose update comes from the gradient of the edit prompts; subclasses implement
    :meth:`paths_for` and :meth:`compute_update`."""

    @abstractmethod
    def paths_for(self, lm: LoadedModel, timer: PhaseTimer) -> list[str]:
        """The module paths this apply() may change (resolved before the model is frozen)."""

    @abstractmethod
    def compute_update(
        self,
        lm: LoadedModel,
        requests: Sequence[EditRequest],
        batch: PromptTargetBatch,
        paths: list[str],
        timer: PhaseTimer,
    ) -> GradientUpdate:
        """The canonical deltas of ``paths`` for ``requests``; called with the model frozen, in eval mode.
        Time its phases with ``timer`` (``optimise``; ``gradients`` and ``network`` for MEND)."""

    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditResult:
        timer = PhaseTimer()
        paths = self.paths_for(lm, timer)
        batch = request_batch(lm, requests)
        with frozen_eval(lm.model):
            with timer.phase("init"):
                init_probs = target_probabilities(lm, batch)
            update = self.compute_update(lm, requests, batch, paths, timer)
            deltas = {p: d.detach() for p, d in update.deltas.items()}
            with timer.phase("commit"):
                committed, originals = commit_deltas(lm.adapter, deltas)
            with timer.phase("evaluate"):
                final_probs = target_probabilities(lm, batch)
        trace = update.trace
        shared: dict[str, Any] = {}
        info = dict(update.info)
        if trace is not None:
            shared = {"steps": trace.steps, "final_loss": trace.losses[-1] if trace.losses else None}
            info.update(steps=trace.steps, loss_trace=trace.losses)
        # Norms of the float deltas the method computed (before rounding to the model's dtype).
        info["delta_fro"] = {p: float(d.double().norm()) for p, d in deltas.items()}
        return EditResult(
            method=self.name,
            deltas=committed,
            originals=originals,
            timings=timer.seconds,
            request_stats=probability_stats(requests, init_probs, final_probs, **shared),
            info=info,
        )


def default_layers(num_layers: int, *, single: bool) -> list[int]:
    """FT-L: one layer at ~1/6 of the depth, where locate-and-edit methods edit (layer 5 of SmolLM2's 30);
    FT and LoRA: three consecutive layers starting there. Measured on SmolLM2-135M (see
    :mod:`seqedit.editors.finetune`)."""
    first = max(0, round(num_layers / 6))
    if single:
        return [first]
    return list(range(first, min(num_layers, first + 3)))


def edited_paths(adapter: ArchitectureAdapter, layers: Sequence[int], kinds: Sequence[MatrixKind]) -> list[str]:
    """The module paths of ``kinds`` in each of ``layers``; naming one matrix twice is an error."""
    paths: list[str] = []
    for layer in layers:
        for kind in kinds:
            site = adapter.site(kind, layer)
            paths.extend([site] if isinstance(site, str) else site)
    if len(set(paths)) != len(paths):
        raise ValueError(f"layers {list(layers)} name the same matrix twice")
    return paths


class LayeredConfig(EditorConfig):
    """Settings of a gradient editor trained on chosen matrix kinds of chosen layers (FT, LoRA)."""

    layers: list[int] | None = Field(
        None, description="Layers whose matrices are trained (negative counts from the top); None: model default."
    )
    kinds: list[MatrixKind] = Field(["mlp.out_proj"], min_length=1, description="Matrix kinds trained in each layer.")


class LayeredGradientEditor(GradientEditor):
    """A gradient editor with a :class:`LayeredConfig`; ``layers: None`` means :func:`default_layers`."""

    single_layer: ClassVar[bool] = False

    @property
    def layered_config(self) -> LayeredConfig:
        assert isinstance(self.config, LayeredConfig)
        return self.config

    def layers_of(self, lm: LoadedModel) -> list[int]:
        layers = self.layered_config.layers
        return list(layers) if layers is not None else default_layers(lm.adapter.num_layers, single=self.single_layer)

    def paths_for(self, lm: LoadedModel, timer: PhaseTimer) -> list[str]:
        return edited_paths(lm.adapter, self.layers_of(lm), self.layered_config.kinds)

    @classmethod
    def default_config(cls, lm: LoadedModel | None = None, profile: str | None = None) -> EditorConfig:
        config = super().default_config(lm, profile)
        assert isinstance(config, LayeredConfig)
        if lm is not None and config.layers is None:
            config.layers = default_layers(lm.adapter.num_layers, single=cls.single_layer)
        return config
