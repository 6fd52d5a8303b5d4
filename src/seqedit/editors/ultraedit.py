"""UltraEdit (Gu et al. 2025, "UltraEdit: Training-, Subject-, and Memory-Free Lifelong Editing", arXiv
2505.14679): a parameter shift computed in one step from hidden states and their gradients.

For a batch of facts, one forward/backward pass of the teacher-forced ``prompt -> target`` loss records, at
every edited module and every position that predicts a target token, the module's input ``k`` (the
hidden state) and the gradient ``g`` of the loss with respect to the module's output. Per module shape, a
*lifelong normaliser* keeps the running mean ``μ`` and the running sum of squared deviations ``s²`` of the
features ``z = [k ‖ g]`` over every batch edited so far (Chan et al.'s pairwise update), with
``σ = sqrt(s² / (N - 1))``; the batch's features are added before they are normalised,
``ẑ = (z - μ) / (σ + ε)``. Each position's pseudo value (the change its output should make) is a gradient
step in the normalised space, ``v = -lr·‖k̂‖²·ĝ``, and the shift is the ridge least-squares map from the
raw keys to those values:

    ΔW = argmin Σ_i ‖ΔW k_i - v_i‖² + λ‖ΔW‖²  =  Vᵀ K (Kᵀ K + λ I)⁻¹      (λ = 1 in the released code)

so ``ΔW k_i = v_i`` up to the ridge's shrinkage ``G (G + λI)⁻¹`` with ``G = K Kᵀ`` the keys' Gram matrix.
The running statistics are the editor's state (``state_dict``): a resumed run continues exactly.
Defaults and what was unsure: docs/editors.md ("UltraEdit").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator

from seqedit.data.records import EditRequest
from seqedit.editors.base import Editor, EditorConfig, EditResult, PhaseTimer, commit_deltas
from seqedit.editors.edit_loss import forward_logits, frozen_eval, request_batch, row_nll
from seqedit.editors.solvers import least_squares_update, solve_device
from seqedit.models.adapters.base import ArchitectureAdapter
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import PromptTargetBatch, target_log_probs


class UltraEditConfig(EditorConfig):
    layers: list[int] | None = Field(
        None, description="Layers whose MLP out-projection is edited. None: 5 layers ending 4 below the top."
    )
    lr: float = Field(1e-6, gt=0, description="Step size of the pseudo value v = -lr·‖k̂‖²·ĝ (released: 1e-6).")
    ridge: float = Field(1.0, gt=0, description="λ of the ridge solve ΔW = Vᵀ K (KᵀK + λI)⁻¹ (released: 1).")

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value or any(layer < 0 for layer in value) or len(set(value)) != len(value):
            raise ValueError("layers must be distinct non-negative layer indices")
        return sorted(value)


def default_layers(num_layers: int, count: int = 5) -> list[int]:
    """``count`` consecutive layers ending 4 below the top (the upper MLPs, as the released configs edit)."""
    count = max(1, min(count, num_layers))
    end = max(count, num_layers - 4)
    return list(range(end - count, end))


# ---------------------------------------------------------------------------------------------- normaliser
@dataclass
class LifelongNormaliser:
    """Running mean and squared deviations of features seen over all batches (float64)."""

    count: int
    mean: torch.Tensor  # [d]
    m2: torch.Tensor  # [d]: Σ (z - mean)²

    @classmethod
    def empty(cls, size: int, device: torch.device | None = None) -> LifelongNormaliser:
        zeros = torch.zeros(size, dtype=torch.float64, device=device)
        return cls(0, zeros, zeros.clone())

    def updated(self, features: torch.Tensor) -> LifelongNormaliser:
        """The statistics after adding ``features`` (``[n, d]``): Chan et al.'s merge of two groups."""
        x = features.to(device=self.mean.device, dtype=torch.float64)
        n = x.shape[0]
        batch_mean = x.mean(0)
        batch_m2 = (x - batch_mean).pow(2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        mean = self.mean + delta * (n / total)
        m2 = self.m2 + batch_m2 + delta.pow(2) * (self.count * n / total)
        return LifelongNormaliser(total, mean, m2)

    @property
    def std(self) -> torch.Tensor:
        return (self.m2 / max(self.count - 1, 1)).sqrt()

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(torch.float32).eps
        return (features.to(self.mean) - self.mean) / (self.std + eps)


# ---------------------------------------------------------------------------------------------- features
@dataclass
class EditFeatures:
    keys: torch.Tensor  # [positions, d_in]: the module's input at every target-predicting position
    grads: torch.Tensor  # [positions, d_out]: d loss / d module output there


def edit_features(
    lm: LoadedModel, batch: PromptTargetBatch, paths: Sequence[str]
) -> tuple[dict[str, EditFeatures], torch.Tensor]:
    """One forward/backward of ``Σ_rows mean-token NLL``: keys and output gradients of each module at the
    target-predicting positions, and the rows' losses. Only zero tensors added to the outputs need grad,
    so no parameter gradient is computed and the model is untouched."""
    adapter = lm.adapter
    inputs: dict[str, torch.Tensor] = {}
    probes: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(path: str):
        def hook(_module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            inputs[path] = args[0].detach()
            probe = torch.zeros_like(output, requires_grad=True)
            probes[path] = probe
            return output + probe

        return hook

    try:
        for path in paths:
            handles.append(adapter.module(path).register_forward_hook(make_hook(path)))
        with torch.enable_grad():
            losses = row_nll(forward_logits(lm, batch), batch)
            grads = torch.autograd.grad(losses.sum(), [probes[p] for p in paths])
    finally:
        for handle in handles:
            handle.remove()
    where = batch.target_mask
    features = {
        path: EditFeatures(inputs[path][where].float(), grad[where].float())
        for path, grad in zip(paths, grads, strict=True)
    }
    return features, losses.detach()


def pseudo_values(features: EditFeatures, normaliser: LifelongNormaliser, lr: float) -> torch.Tensor:
    """``v = -lr·‖k̂‖²·ĝ`` with ``[k̂ ‖ ĝ]`` the normalised features (float64, ``[positions, d_out]``)."""
    z = normaliser.normalise(torch.cat([features.keys, features.grads], dim=-1))
    k_hat, g_hat = z.split([features.keys.shape[1], features.grads.shape[1]], dim=-1)
    return -lr * k_hat.pow(2).sum(-1, keepdim=True) * g_hat


def shape_key(adapter: ArchitectureAdapter, path: str) -> str:
    d_out, d_in = adapter.from_native(path, adapter.weight(path)).shape
    return f"{d_in}x{d_out}"


# ---------------------------------------------------------------------------------------------- editor
class UltraEdit(Editor):
    name = "ultraedit"
    config_class: ClassVar[type[EditorConfig]] = UltraEditConfig
    description = "UltraEdit: one-step shift from hidden states and gradients, lifelong normalisation (Gu et al. 2025)"
    intended_batch_mode = "batch"

    def __init__(self, config: EditorConfig | None = None) -> None:
        super().__init__(config)
        # One normaliser per module shape ("{d_in}x{d_out}"), as in the released code.
        self._normalisers: dict[str, LifelongNormaliser] = {}

    @property
    def cfg(self) -> UltraEditConfig:
        assert isinstance(self.config, UltraEditConfig)
        return self.config

    def resolve_layers(self, lm: LoadedModel) -> list[int]:
        """The edited layers: the setting, or the depth-based default (recorded in editor.json)."""
        n = lm.adapter.num_layers
        layers = self.cfg.layers if self.cfg.layers is not None else default_layers(n)
        if max(layers) >= n:
            raise ValueError(f"{self.name}: layer {max(layers)} out of range; the model has {n} layers")
        return list(layers)

    def resolve_paths(self, lm: LoadedModel) -> list[str]:
        return [lm.adapter.mlp_out_proj(layer) for layer in self.resolve_layers(lm)]

    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditResult:
        if not requests:
            raise ValueError(f"{self.name}: no edit requests")
        timer = PhaseTimer()
        paths = self.resolve_paths(lm)
        batch = request_batch(lm, requests)
        device = solve_device(lm.device)
        with frozen_eval(lm.model):
            with timer.phase("features"):
                features, losses = edit_features(lm, batch, paths)
            with timer.phase("solve"):
                normalisers = dict(self._normalisers)
                for path in paths:  # add every module's features of a shape before any is normalised
                    key = shape_key(lm.adapter, path)
                    f = features[path]
                    size = f.keys.shape[1] + f.grads.shape[1]
                    normalisers[key] = normalisers.get(key, LifelongNormaliser.empty(size, device)).updated(
                        torch.cat([f.keys, f.grads], dim=-1)
                    )
                shifts: dict[str, torch.Tensor] = {}
                for path in paths:
                    f = features[path]
                    values = pseudo_values(f, normalisers[shape_key(lm.adapter, path)], self.cfg.lr)
                    shifts[path] = least_squares_update(f.keys.to(device), values.to(device), None, self.cfg.ridge)
            with timer.phase("commit"):
                deltas, originals = commit_deltas(lm.adapter, shifts)  # raises (changing nothing) on NaN/Inf
            with timer.phase("evaluate"):
                final, _ = target_log_probs(forward_logits(lm, batch).detach(), batch)
        self._normalisers = normalisers
        lengths = batch.target_mask.sum(-1)
        stats = [
            {"case_id": r.case_id, "init_prob": float((-nll * n).double().exp()),
             "final_prob": float(lp.double().exp()), "positions": int(n)}
            for r, nll, lp, n in zip(requests, losses, final, lengths, strict=True)
        ]
        return EditResult(
            method=self.name,
            deltas=deltas,
            originals=originals,
            timings=timer.seconds,
            request_stats=stats,
            info={
                "paths": paths,
                "config": self.cfg.model_dump(mode="json"),
                "shift_fro": {p: float(d.norm()) for p, d in shifts.items()},
                "normaliser_count": {k: n.count for k, n in self._normalisers.items()},
            },
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for key, norm in self._normalisers.items():
            state[f"normaliser.{key}.count"] = torch.tensor([norm.count], dtype=torch.int64)
            state[f"normaliser.{key}.mean"] = norm.mean.detach().cpu()
            state[f"normaliser.{key}.m2"] = norm.m2.detach().cpu()
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in state.items():
            prefix, _, rest = name.partition(".")
            key, _, field_name = rest.rpartition(".")
            if prefix != "normaliser" or field_name not in {"count", "mean", "m2"} or not key:
                raise ValueError(f"{self.name}: unexpected state entry '{name}'")
            parts.setdefault(key, {})[field_name] = tensor
        normalisers: dict[str, LifelongNormaliser] = {}
        for key, fields in parts.items():
            if set(fields) != {"count", "mean", "m2"}:
                raise ValueError(f"{self.name}: state of normaliser {key} is incomplete: {sorted(fields)}")
            normalisers[key] = LifelongNormaliser(
                int(fields["count"].reshape(-1)[0].item()), fields["mean"].clone(), fields["m2"].clone()
            )
        self._normalisers = normalisers
