"""Stabilisers: options that compose with every locate-and-edit method (ROME, MEMIT, EMMET, AlphaEdit,
ENCORE) and act on what the method solved, before it is committed. One function per stabiliser; the
formulas, the papers' defaults and what is uncertain are in docs/editors.md ("Stabilisers").

* **NAS**, Norm-Anchor Scaling (Liu et al., arXiv 2602.02543) acts on the *targets*: the solved value
  vector ``v* = v0 + δ`` (the edited layer's MLP output ``v0`` at the subject's last token plus the
  optimised shift ``δ``) is rescaled to a reference norm measured on the unedited model, so that
  ``z = (h - v0) + ρ·v*/‖v*‖``; a target with ``‖v*‖ > skip·ρ`` is dropped (``v* = v0``, no shift).
* **RECT** (Gu et al. 2024) acts on each batch's update: only the ``keep_fraction`` of entries with the
  largest relative change ``|ΔW_ij| / (|W_ij| + ε)`` are kept, the others are zeroed.
* **PRUNE** (Ma et al., ICLR 2025) acts on the accumulated update ``ΔW_Σ`` (the sum of every batch's
  update, carried in the editor state): its singular values above ``σ_max(W0)`` are restrained with
  ``F(σ) = log_α(σ) - log_α(σ_max(W0)) + σ_max(W0)``, and the weight becomes ``W0 + U F(Σ) Vᵀ``.
* **Norm budget** (this project): after every batch, the accumulated update ``U = W - W0`` is scaled by
  the largest ``c ≤ 1`` that keeps ``‖W0 + cU‖_F ≤ cap·‖W0‖_F`` (kind ``weight``) or ``‖cU‖_F ≤ cap·‖W0‖_F``
  (kind ``update``).

Order within a batch: NAS (targets), then the solve, then RECT, PRUNE and the budget on the weights.
What the stabilisers carry across batches (NAS's reference norm, ``W0`` and PRUNE's raw sum per matrix)
lives in :class:`StabiliserState`, saved with the editor's ``state_dict`` so a resumed run continues
exactly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from seqedit.data.records import EditRequest
from seqedit.editors.base import EditorConfig
from seqedit.editors.keys import fill_subject, pad_rows
from seqedit.models import hooks
from seqedit.models.adapters.base import ArchitectureAdapter
from seqedit.models.loading import LoadedModel
from seqedit.models.tokens import subject_token_index

# RECT's default kept fraction (Gu et al. 2024: the top 20 % of entries by relative change).
RECT_KEEP_FRACTION = 0.2
# NAS's released settings: a trimmed mean that drops the top 5 % of ‖v*‖, and targets above 2x the
# reference are dropped.
NAS_TRIM_TOP = 0.05
NAS_SKIP_FACTOR = 2.0
_RECT_EPS = 1e-8


class StabiliserSettings(EditorConfig):
    """Stabiliser fields of :class:`~seqedit.editors.locate.LocateEditConfig` (all off by default)."""

    nas: bool = Field(False, description="NAS: rescale each solved value vector v* to the unedited model's mean ‖v*‖.")
    nas_reference_norm: float | None = Field(
        None, gt=0, description="NAS reference ‖v*‖; None: the trimmed mean over the first batch, on the unedited model."
    )
    nas_skip_factor: float = Field(
        NAS_SKIP_FACTOR, gt=0, description="NAS: a fact whose ‖v*‖ exceeds this times the reference is not edited."
    )
    rect: bool = Field(False, description="RECT: keep only the largest relative changes of each batch's update.")
    rect_keep_fraction: float = Field(
        RECT_KEEP_FRACTION, gt=0, le=1, description="RECT: fraction of entries kept (by |ΔW_ij|/|W_ij|)."
    )
    prune: bool = Field(False, description="PRUNE: log-restrain singular values of the accumulated update above σ_max(W0).")
    prune_log_base: float = Field(math.e, gt=1, description="PRUNE: base α of the log in F(σ).")
    norm_budget: float | None = Field(
        None, gt=0, description="Norm budget: cap on ‖W‖/‖W0‖ (kind weight) or ‖W-W0‖/‖W0‖ (kind update); None: off."
    )
    norm_budget_kind: Literal["weight", "update"] = Field("weight", description="What the norm budget caps.")

    @model_validator(mode="after")
    def _weight_budget_above_one(self) -> StabiliserSettings:
        if self.norm_budget is not None and self.norm_budget_kind == "weight" and self.norm_budget <= 1:
            raise ValueError("norm_budget of kind 'weight' caps ‖W‖/‖W0‖ and must be > 1")
        return self

    def acts_on_weights(self) -> bool:
        return self.rect or self.prune or self.norm_budget is not None

    def needs_base(self) -> bool:
        return self.prune or self.norm_budget is not None


# ---------------------------------------------------------------------------------------------- state
@dataclass
class StabiliserState:
    """What the stabilisers carry across batches. Tensors are replaced, never changed in place, so a
    shallow :meth:`copy` restores the state after a failed edit."""

    nas_reference: float | None = None
    base: dict[str, torch.Tensor] = field(default_factory=dict)  # W0 per module path, canonical float32
    raw: dict[str, torch.Tensor] = field(default_factory=dict)  # PRUNE: Σ batch updates, canonical float32

    def copy(self) -> StabiliserState:
        return StabiliserState(self.nas_reference, dict(self.base), dict(self.raw))

    def state_dict(self, prefix: str = "stabilisers.") -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        if self.nas_reference is not None:
            state[f"{prefix}nas_reference"] = torch.tensor([self.nas_reference], dtype=torch.float64)
        state.update({f"{prefix}base.{path}": t.detach().cpu() for path, t in self.base.items()})
        state.update({f"{prefix}raw.{path}": t.detach().cpu() for path, t in self.raw.items()})
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], prefix: str = "stabilisers.") -> StabiliserState:
        out = cls()
        for name, tensor in state.items():
            if not name.startswith(prefix):
                continue
            key = name[len(prefix):]
            if key == "nas_reference":
                out.nas_reference = float(tensor.reshape(-1)[0].item())
            elif key.startswith("base."):
                out.base[key[len("base."):]] = tensor.clone()
            elif key.startswith("raw."):
                out.raw[key[len("raw."):]] = tensor.clone()
            else:
                raise ValueError(f"unexpected stabiliser state entry '{name}'")
        return out


# ---------------------------------------------------------------------------------------------- NAS
@torch.no_grad()
def mlp_outputs(lm: LoadedModel, requests: Sequence[EditRequest], layer: int) -> torch.Tensor:
    """``v0``: the output of ``layer``'s MLP out-projection at the subject's last token of each bare prompt
    (``[facts, d]``, float32), from one forward pass stopped at that module."""
    tokenizer = lm.tokenizer
    rows: list[list[int]] = []
    positions: list[int] = []
    for request in requests:
        rows.append(list(tokenizer(fill_subject(request.prompt, request.subject))["input_ids"]))
        positions.append(subject_token_index(tokenizer, request.prompt, request.subject))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = pad_rows(rows, pad_id, lm.device)
    module = lm.adapter.module(lm.adapter.mlp_out_proj(layer))
    with hooks.capture({"v": module}, "output") as store, hooks.stop_after(module):
        with contextlib.suppress(hooks.StopForward):
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    index = torch.arange(len(rows), device=lm.device)
    return store["v"][index, torch.tensor(positions, device=lm.device)].float()


def trimmed_mean(values: torch.Tensor, drop_top: float = NAS_TRIM_TOP) -> float:
    """Mean after dropping the largest ``floor(drop_top·n)`` values (NAS's reference statistic)."""
    ordered = values.double().flatten().sort().values
    drop = math.floor(drop_top * ordered.numel())
    kept = ordered[: ordered.numel() - drop] if drop else ordered
    return float(kept.mean())


@dataclass
class NASResult:
    z: torch.Tensor  # [facts, d] rescaled targets
    stats: list[dict[str, Any]]


def nas_targets(
    z: torch.Tensor, hidden: torch.Tensor, v0: torch.Tensor, reference: float, skip_factor: float
) -> NASResult:
    """Rescale ``v* = v0 + (z - h)`` to norm ``reference``: ``z' = (h - v0) + reference·v*/‖v*‖``; facts
    with ``‖v*‖ > skip_factor·reference`` keep ``z' = h`` (not edited), as in NAS's released code."""
    z, hidden, v0 = (t.double() for t in (z, hidden, v0.to(z.device)))
    v_star = v0 + (z - hidden)
    norms = v_star.norm(dim=-1)
    skipped = norms > skip_factor * reference
    scale = torch.where(norms > 0, reference / norms.clamp(min=1e-30), torch.ones_like(norms))
    rescaled = (hidden - v0) + scale[:, None] * v_star
    out = torch.where(skipped[:, None], hidden, rescaled)
    stats = [
        {"nas_v_norm": float(n), "nas_scale": 0.0 if s else float(c), "nas_skipped": bool(s)}
        for n, c, s in zip(norms, scale, skipped, strict=True)
    ]
    return NASResult(out, stats)


# ---------------------------------------------------------------------------------------------- RECT
def rect_update(delta: torch.Tensor, weight: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Keep the ``ceil(keep_fraction·numel)`` entries of ``delta`` with the largest ``|Δ_ij| / (|W_ij| + ε)``
    (ties broken by position), zero the others."""
    relative = (delta.abs() / (weight.to(delta).abs() + _RECT_EPS)).flatten()
    keep = min(relative.numel(), max(1, math.ceil(keep_fraction * relative.numel())))
    index = torch.topk(relative, keep, sorted=False).indices
    mask = torch.zeros_like(relative, dtype=torch.bool)
    mask[index] = True
    return torch.where(mask.view_as(delta), delta, torch.zeros_like(delta))


# ---------------------------------------------------------------------------------------------- PRUNE
def prune_bound(sigma: torch.Tensor, sigma_max0: float, log_base: float) -> torch.Tensor:
    """PRUNE's ``F``: identity up to ``σ_max0``, ``log_α(σ) - log_α(σ_max0) + σ_max0`` above it."""
    restrained = (torch.log(sigma.clamp(min=1e-300)) - math.log(sigma_max0)) / math.log(log_base) + sigma_max0
    return torch.where(sigma > sigma_max0, restrained, sigma)


def prune_restrain(total: torch.Tensor, base: torch.Tensor, log_base: float) -> tuple[torch.Tensor, int, float]:
    """``U F(Σ) Vᵀ`` of the accumulated update ``total``, with ``σ_max0 = σ_max(base)``; returns it, how
    many singular values were restrained, and ``σ_max(total) / σ_max0`` (PRUNE acts once it exceeds 1, so
    below 1 it says how close the update is to being restrained)."""
    sigma_max0 = float(torch.linalg.matrix_norm(base.double(), ord=2))
    u, s, vh = torch.linalg.svd(total.double(), full_matrices=False)
    ratio = float(s[0]) / sigma_max0 if s.numel() else 0.0
    restrained = prune_bound(s, sigma_max0, log_base)
    count = int((s > sigma_max0).sum())
    if count == 0:
        return total.double(), 0, ratio
    return (u * restrained) @ vh, count, ratio


# ---------------------------------------------------------------------------------------------- budget
def budget_factor(base: torch.Tensor, update: torch.Tensor, cap: float, kind: Literal["weight", "update"]) -> float:
    """The largest ``c`` in ``[0, 1]`` with ``‖base + c·update‖ ≤ cap·‖base‖`` (``weight``) or
    ``‖c·update‖ ≤ cap·‖base‖`` (``update``)."""
    base, update = base.double(), update.double()
    limit = cap * float(base.norm())
    u2 = float(update.pow(2).sum())
    if u2 == 0.0:
        return 1.0
    if kind == "update":
        return min(1.0, limit / math.sqrt(u2))
    if float((base + update).norm()) <= limit:
        return 1.0
    # ‖B + cU‖² = ‖B‖² + 2c⟨B,U⟩ + c²‖U‖² = limit²: the positive root (‖B‖ < limit since cap > 1).
    b = 2.0 * float((base * update).sum())
    d = float(base.pow(2).sum()) - limit**2
    c = (-b + math.sqrt(max(b * b - 4.0 * u2 * d, 0.0))) / (2.0 * u2)
    return max(0.0, min(1.0, c * (1.0 - 1e-9)))  # a hair inside, so float rounding never crosses the cap


# ---------------------------------------------------------------------------------------------- weights
@torch.no_grad()
def stabilise_weights(
    adapter: ArchitectureAdapter,
    originals: Mapping[str, torch.Tensor],
    totals: dict[str, torch.Tensor],
    settings: StabiliserSettings,
    state: StabiliserState,
) -> tuple[StabiliserState, dict[str, Any]]:
    """Apply RECT, PRUNE and the budget to one batch: ``totals`` (canonical float64 update per module path,
    relative to the pre-batch weights ``originals``, native) is replaced in place by the stabilised update.
    Returns the new state and the batch's figures (also copied into every request's stats)."""
    new_state = state.copy()
    figures: dict[str, Any] = {}
    rect_kept: list[float] = []
    pruned: list[int] = []
    prune_ratios: list[float] = []
    budget_factors: list[float] = []
    for path, delta in totals.items():
        before = adapter.from_native(path, originals[path]).to(device=delta.device, dtype=torch.float64)
        if settings.rect:
            delta = rect_update(delta, before, settings.rect_keep_fraction)
            rect_kept.append(float((delta != 0).double().mean()))
        if not settings.needs_base():
            totals[path] = delta
            continue
        if path not in new_state.base:
            new_state.base[path] = before.float().cpu()
        base = new_state.base[path].to(device=delta.device, dtype=torch.float64)
        after = before + delta
        if settings.prune:
            raw_before = new_state.raw.get(path)
            raw = delta if raw_before is None else raw_before.to(delta) + delta
            new_state.raw[path] = raw.float().cpu()
            restrained, count, ratio = prune_restrain(raw, base, settings.prune_log_base)
            pruned.append(count)
            prune_ratios.append(ratio)
            after = base + restrained
        if settings.norm_budget is not None:
            factor = budget_factor(base, after - base, settings.norm_budget, settings.norm_budget_kind)
            budget_factors.append(factor)
            if factor < 1.0:
                after = base + factor * (after - base)
        totals[path] = after - before
    if settings.rect:
        figures["rect_kept_fraction"] = sum(rect_kept) / len(rect_kept)
    if settings.prune:
        figures["prune_restrained_values"] = sum(pruned)
        figures["prune_sigma_ratio_max"] = max(prune_ratios)  # σ_max(ΣΔW)/σ_max(W0), largest over matrices
    if settings.norm_budget is not None:
        figures["budget_matrices_scaled"] = sum(f < 1.0 for f in budget_factors)
        figures["budget_min_factor"] = min(budget_factors)
    return new_state, figures
