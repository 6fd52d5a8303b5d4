"""Norms of the tracked weight matrices, cheap enough to update after every batch of edits.

For every tracked matrix ``W`` (``adapter.matrices(group)``) and step ``t``:

=================  ==============================================================================
``fro``            ``‖W_t‖_F``
``fro_rel``        ``‖W_t‖_F / ‖W_0‖_F`` (norm growth, Gupta et al. 2025)
``dist_from_init`` ``‖W_t − W_0‖_F``
``step_delta_fro`` ``‖ΔW_t‖_F``, the Frobenius norm of what this step added
``spectral``       largest singular value of ``W_t`` by power iteration (see below)
=================  ==============================================================================

Cost. Only the matrices named in a step's ``EditResult.deltas`` are touched; every other tracked matrix
carries its numbers over at no cost. For a changed matrix, ``‖W_t‖_F`` is computed directly (one float64
pass over the stored weight). The incremental identity ``‖W_t‖² = ‖W_{t−1}‖² + 2⟨W_{t−1},Δ⟩ + ‖Δ‖²``
would need that same pass to get ``⟨W_{t−1},Δ⟩``, so it saves nothing, and it describes ``W_0 + ΣΔ``
rather than the weights actually stored (which are rounded to the model dtype after every addition).
``‖W_t − W_0‖_F`` is the norm of a cumulative delta ``Σ Δ`` kept in float64 for each matrix that has
changed at least once, so memory grows with the edited matrices only, not with the tracked ones.

Spectral norm. Block power (subspace) iteration on ``WᵀW`` with ``block_size`` vectors, warm-started
from the previous step's block; the estimate is a lower bound of σ₁ whose error shrinks like
``(σ_{b+1}/σ₁)^(2k)`` after ``k`` iterations. The first measurement runs ``init_iters`` iterations from
a seeded random block; each step then runs ``iters_per_step`` more on each changed matrix (both stop
early once the estimate changes by less than ``tol``, relative). A small edit
moves the top singular subspace little, so a few warm iterations keep the estimate close to the exact
value. A single vector converges slowly on matrices whose σ₂/σ₁ ≈ 1; a block converges on them at about
the same cost. The error of the monitor's own estimates against ``torch.linalg.matrix_norm(ord=2)`` on
SmolLM2-135M's matrices is in ``benchmarks/results/evaluation.json`` (``norms.baseline`` and
``norms.update``: ``max_rel_error``), written by ``benchmarks/evaluation.py``. ``spectral=False`` skips it
(the ``spectral`` column is then None).

Dense changes. Training changes every matrix at every step and produces no deltas; :class:`WeightChanges`
turns the weights into deltas (``W_now − W_last`` in float64) one matrix at a time, and ``weight_of``
lets the monitor measure the matrix a model actually applies when that is not the stored weight (LoRA's
``W + s·BA``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from seqedit.models.adapters.base import ArchitectureAdapter, MatrixGroup, MatrixInfo
from seqedit.utils.rows import CheckpointRow, checkpoint_row

# The matrix a model applies for a tracked entry (any layout: norms do not depend on it).
WeightReader = Callable[[MatrixInfo], torch.Tensor]


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 wherever the device supports it (Apple's MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def orthonormalize_columns(block: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt applied twice ("twice is enough"), written with matrix products.

    For the thin blocks used here it is as accurate as a Householder QR, and unlike LAPACK's QR it does
    not slow down by two orders of magnitude when a multi-threaded BLAS shares busy cores.
    """
    tiny = torch.finfo(block.dtype).tiny
    columns: list[torch.Tensor] = []
    for j in range(block.shape[1]):
        v = block[:, j]
        for _ in range(2):
            if columns:
                basis = torch.stack(columns, dim=1)
                v = v - basis @ (basis.T @ v)
        columns.append(v / v.norm().clamp_min(tiny))
    return torch.stack(columns, dim=1)


def _largest_singular_value(product: torch.Tensor) -> float:
    """σ_max of a thin ``[m, b]`` matrix from the eigenvalues of its ``b × b`` Gram matrix."""
    return float(torch.linalg.eigvalsh(product.T @ product)[-1].clamp_min(0.0).sqrt())


def block_power_iteration(
    matrix: torch.Tensor, block: torch.Tensor, iterations: int, *, tol: float = 0.0
) -> tuple[float, torch.Tensor]:
    """Estimate the largest singular value of ``matrix`` ``[m, n]`` by subspace iteration on ``WᵀW``.

    ``block`` ``[n, b]`` spans the start subspace (a warm start: the block this function returned
    last time). Returns ``(sigma, block)``: ``sigma`` is the largest singular value of ``W V`` for the
    refined orthonormal block ``V``, which never exceeds the true spectral norm; the error shrinks like
    ``(σ_{b+1}/σ₁)^(2k)`` after ``k`` iterations, so a block of a few vectors converges even when σ₁ and σ₂
    are close. The block is re-orthonormalised and the estimate checked every other iteration; iteration
    stops early once the estimate changes by at most ``tol`` (relative) between checks.
    """
    if iterations < 1:
        raise ValueError(f"block power iteration needs at least one iteration, got {iterations}")
    if block.ndim != 2 or block.shape[0] != matrix.shape[1]:
        raise ValueError(f"block must be [{matrix.shape[1]}, b], got {tuple(block.shape)}")
    v = orthonormalize_columns(block)
    sigma: float | None = None
    for step in range(1, iterations + 1):
        v = matrix.T @ (matrix @ v)
        if step % 2 and step != iterations:
            v = v / v.norm(dim=0, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
            continue
        v = orthonormalize_columns(v)
        previous, sigma = sigma, _largest_singular_value(matrix @ v)
        if previous is not None and abs(sigma - previous) <= tol * sigma:
            break
    assert sigma is not None
    return sigma, v


@dataclass(frozen=True)
class MatrixNorms:
    """The norms of one tracked matrix after one step (one ``norms.jsonl`` row, minus step/n_edits)."""

    matrix: str
    layer: int
    kind: str
    edited: bool
    fro: float
    fro0: float
    dist_from_init: float
    step_delta_fro: float
    spectral: float | None  # None when the monitor does not estimate it

    @property
    def fro_rel(self) -> float:
        return self.fro / self.fro0 if self.fro0 > 0 else float("nan")

    def row(self) -> dict[str, Any]:
        return {
            "matrix": self.matrix,
            "layer": self.layer,
            "kind": self.kind,
            "edited": self.edited,
            "fro": self.fro,
            "fro0": self.fro0,
            "fro_rel": self.fro_rel,
            "dist_from_init": self.dist_from_init,
            "step_delta_fro": self.step_delta_fro,
            "spectral": self.spectral,
        }


@dataclass(frozen=True)
class NormSnapshot:
    """Norms of every tracked matrix after a step. ``changed``: module paths this step touched;
    ``untracked``: parameters in the step's deltas that this monitor does not track."""

    matrices: tuple[MatrixNorms, ...]
    changed: tuple[str, ...] = ()
    untracked: tuple[str, ...] = ()

    def rows(self, *, changed_only: bool = False) -> list[dict[str, Any]]:
        chosen = [m for m in self.matrices if m.matrix in self.changed] if changed_only else self.matrices
        return [m.row() for m in chosen]


@dataclass(frozen=True)
class NormProfile:
    """Per-layer, per-kind Frobenius norms of all tracked matrices (the model's "balance").

    For kinds with several matrices per layer (q/k/v, gate/up), the norm is that of the matrices
    stacked: ``sqrt(Σ ‖W_i‖_F²)``. ``edited`` is 1 where any matrix of that layer and kind has changed.
    """

    entries: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    DEFINITION = "fro:sqrt(sum of squared Frobenius norms of the layer's matrices of this kind)"

    def rows(self) -> list[CheckpointRow]:
        rows: list[CheckpointRow] = []
        for e in self.entries:
            for name in ("fro", "fro_rel", "edited"):
                rows.append(
                    checkpoint_row(
                        "profile",
                        name,
                        e[name],
                        scope=e["kind"],
                        layer=e["layer"],
                        definition=self.DEFINITION,
                    )
                )
        return rows


class NormMonitor:
    """Tracks the norms of a fixed set of weight matrices across sequential edits.

    Call :meth:`baseline` once on the unedited model (step 0), then :meth:`update` with each step's
    ``EditResult.deltas`` *after* they were added to the model. A resumed run restores the state with
    :meth:`load_state_dict` instead of calling :meth:`baseline`.

    ``weight_of`` reads a tracked matrix (default: the module's stored weight); deltas must have the shape
    it returns. ``spectral=False`` skips the spectral-norm estimate.
    """

    def __init__(
        self,
        adapter: ArchitectureAdapter,
        matrices: Sequence[MatrixInfo] | MatrixGroup = "all",
        *,
        init_iters: int = 50,
        iters_per_step: int = 4,
        block_size: int = 8,
        tol: float = 1e-10,
        seed: int = 0,
        spectral: bool = True,
        weight_of: WeightReader | None = None,
    ) -> None:
        if init_iters < 1 or iters_per_step < 1 or block_size < 1:
            raise ValueError("init_iters, iters_per_step and block_size must be >= 1")
        self.adapter = adapter
        self.matrices: list[MatrixInfo] = (
            adapter.matrices(matrices) if isinstance(matrices, str) else list(matrices)
        )
        if not self.matrices:
            raise ValueError("NormMonitor needs at least one matrix to track")
        self.init_iters = init_iters
        self.iters_per_step = iters_per_step
        self.block_size = block_size
        self.tol = tol
        self.seed = seed
        self.spectral = spectral
        self.weight_of = weight_of
        self._index = {m.param_name: i for i, m in enumerate(self.matrices)}
        if len(self._index) != len(self.matrices):
            raise ValueError("the tracked matrices contain duplicates")
        n = len(self.matrices)
        self._fro0 = torch.zeros(n, dtype=torch.float64)
        self._fro = torch.zeros(n, dtype=torch.float64)
        self._dist = torch.zeros(n, dtype=torch.float64)
        self._spectral = torch.zeros(n, dtype=torch.float64)
        self._blocks: dict[str, torch.Tensor] = {}
        self._cumulative: dict[str, torch.Tensor] = {}
        self._ready = False

    # ----------------------------------------------------------------- weights
    def _weight(self, info: MatrixInfo) -> torch.Tensor:
        """``weight_of(info)``, else the stored (native-layout) weight; norms and singular values do not
        depend on the layout."""
        if self.weight_of is not None:
            return self.weight_of(info).detach()
        return self.adapter.parameter(info.path).detach()

    def _weight_for_math(self, info: MatrixInfo) -> torch.Tensor:
        w = self._weight(info)
        return w.to(accumulation_dtype(w.device))

    # ----------------------------------------------------------------- measuring
    @torch.no_grad()
    def baseline(self) -> NormSnapshot:
        """Measure the unedited model: ``W_0`` norms and initial spectral estimates (step 0)."""
        generator = torch.Generator().manual_seed(self.seed)
        for i, info in enumerate(self.matrices):
            w = self._weight_for_math(info)
            self._fro0[i] = self._fro[i] = float(w.norm())
            if self.spectral:
                size = min(self.block_size, *w.shape)
                start = torch.randn(w.shape[1], size, generator=generator, dtype=torch.float64).to(
                    w.device, w.dtype
                )
                sigma, v = block_power_iteration(w, start, self.init_iters, tol=self.tol)
                self._spectral[i] = sigma
                self._blocks[info.param_name] = v
        self._dist.zero_()
        self._cumulative.clear()
        self._ready = True
        return self._snapshot(torch.zeros_like(self._fro), changed=(), untracked=())

    @torch.no_grad()
    def update(self, deltas: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> NormSnapshot:
        """Account for one step whose ``deltas`` (param name -> tensor added) are already in the model.

        ``deltas`` may also be an iterable of ``(name, delta)`` pairs, consumed one at a time, so that a
        caller measuring dense changes (:meth:`WeightChanges.since_last`) never holds all deltas at once.
        """
        if not self._ready:
            raise RuntimeError("NormMonitor.update() before baseline() or load_state_dict()")
        step_delta = torch.zeros_like(self._fro)
        changed: list[str] = []
        untracked: list[str] = []
        pairs = deltas.items() if isinstance(deltas, Mapping) else deltas
        for name, delta in pairs:
            i = self._index.get(name)
            if i is None:
                untracked.append(name)
                continue
            info = self.matrices[i]
            w = self._weight_for_math(info)
            if tuple(delta.shape) != tuple(w.shape):
                raise ValueError(
                    f"delta for {name} has shape {tuple(delta.shape)}, the weight {tuple(w.shape)}"
                )
            d = delta.detach().to(device=w.device, dtype=w.dtype)
            step_delta[i] = float(d.norm())
            cumulative = _accumulate(self._cumulative, name, d)
            self._dist[i] = float(cumulative.norm())
            self._fro[i] = float(w.norm())
            if self.spectral:
                sigma, v = block_power_iteration(
                    w, self._blocks[name].to(w.device, w.dtype), self.iters_per_step, tol=self.tol
                )
                self._spectral[i] = sigma
                self._blocks[name] = v
            changed.append(info.path)
        return self._snapshot(step_delta, changed=tuple(changed), untracked=tuple(untracked))

    def _snapshot(
        self, step_delta: torch.Tensor, *, changed: tuple[str, ...], untracked: tuple[str, ...]
    ) -> NormSnapshot:
        entries = tuple(
            MatrixNorms(
                matrix=info.path,
                layer=info.layer,
                kind=info.kind,
                edited=info.param_name in self._cumulative,
                fro=float(self._fro[i]),
                fro0=float(self._fro0[i]),
                dist_from_init=float(self._dist[i]),
                step_delta_fro=float(step_delta[i]),
                spectral=float(self._spectral[i]) if self.spectral else None,
            )
            for i, info in enumerate(self.matrices)
        )
        return NormSnapshot(entries, changed=changed, untracked=untracked)

    def current(self) -> NormSnapshot:
        """The latest numbers without measuring anything (``step_delta_fro`` is 0)."""
        if not self._ready:
            raise RuntimeError("NormMonitor.current() before baseline() or load_state_dict()")
        return self._snapshot(torch.zeros_like(self._fro), changed=(), untracked=())

    def profile(self) -> NormProfile:
        """Per-layer Frobenius norm of all tracked matrices by kind, edited layers flagged (free: uses
        the tracked numbers, reads no weight)."""
        if not self._ready:
            raise RuntimeError("NormMonitor.profile() before baseline() or load_state_dict()")
        groups: dict[tuple[int, str], list[int]] = {}
        for i, info in enumerate(self.matrices):
            groups.setdefault((info.layer, info.kind), []).append(i)
        entries = []
        for (layer, kind), idx in sorted(groups.items()):
            index = torch.tensor(idx)
            fro = float(self._fro[index].pow(2).sum().sqrt())
            fro0 = float(self._fro0[index].pow(2).sum().sqrt())
            edited = any(self.matrices[i].param_name in self._cumulative for i in idx)
            entries.append(
                {
                    "layer": layer,
                    "kind": kind,
                    "fro": fro,
                    "fro_rel": fro / fro0 if fro0 > 0 else float("nan"),
                    "edited": float(edited),
                }
            )
        return NormProfile(tuple(entries))

    @torch.no_grad()
    def cumulative_from(self, steps: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The cumulative deltas ``Σ Δ`` that :meth:`update` builds from these steps' deltas (every step from
        the first, in order), with the same arithmetic, so the result equals the recorded one bit for bit: a
        resumed run rebuilds them from its ledger instead of storing them. Keyed as in :meth:`state_dict`."""
        cumulative: dict[str, torch.Tensor] = {}
        for deltas in steps:
            for name, delta in deltas.items():
                i = self._index.get(name)
                if i is not None:
                    w = self._weight_for_math(self.matrices[i])
                    _accumulate(cumulative, name, delta.detach().to(device=w.device, dtype=w.dtype))
        return {f"cumulative/{name}": c.detach().to("cpu") for name, c in cumulative.items()}

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything a resumed run needs to produce identical numbers (CPU tensors)."""
        if not self._ready:
            raise RuntimeError("NormMonitor.state_dict() before baseline()")
        state = {
            "fro0": self._fro0.clone(),
            "fro": self._fro.clone(),
            "dist": self._dist.clone(),
            "spectral": self._spectral.clone(),
        }
        for name, v in self._blocks.items():
            state[f"block/{name}"] = v.detach().to("cpu").clone()
        for name, c in self._cumulative.items():
            state[f"cumulative/{name}"] = c.detach().to("cpu").clone()
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        names = {m.param_name for m in self.matrices}
        blocks = {k.removeprefix("block/"): v for k, v in state.items() if k.startswith("block/")}
        cumulative = {
            k.removeprefix("cumulative/"): v for k, v in state.items() if k.startswith("cumulative/")
        }
        if self.spectral and set(blocks) != names:
            missing, extra = sorted(names - set(blocks)), sorted(set(blocks) - names)
            raise ValueError(
                f"norm monitor state tracks different matrices (missing {missing[:3]}, unexpected {extra[:3]})"
            )
        if not set(cumulative) <= names:
            raise ValueError(
                f"cumulative deltas for untracked matrices: {sorted(set(cumulative) - names)[:3]}"
            )
        n = len(self.matrices)
        for key in ("fro0", "fro", "dist", "spectral"):
            if key not in state or tuple(state[key].shape) != (n,):
                raise ValueError(f"norm monitor state lacks '{key}' of shape ({n},)")
        self._fro0 = state["fro0"].to(torch.float64).clone()
        self._fro = state["fro"].to(torch.float64).clone()
        self._dist = state["dist"].to(torch.float64).clone()
        self._spectral = state["spectral"].to(torch.float64).clone()
        self._blocks, self._cumulative = {}, {}
        for info in self.matrices:
            device = self._weight(info).device
            dtype = accumulation_dtype(device)
            if self.spectral:
                self._blocks[info.param_name] = blocks[info.param_name].to(device, dtype).clone()
            if info.param_name in cumulative:
                self._cumulative[info.param_name] = cumulative[info.param_name].to(device, dtype).clone()
        self._ready = True


def _accumulate(cumulative: dict[str, torch.Tensor], name: str, delta: torch.Tensor) -> torch.Tensor:
    """``cumulative[name] += delta`` in place (a copy of the first): one definition for a run and a resume."""
    total = cumulative.get(name)
    total = delta.clone() if total is None else total.add_(delta)
    cumulative[name] = total
    return total


class WeightChanges:
    """Deltas of matrices that change without an editor's deltas (training): ``W_now − W_last``.

    Keeps one copy of each watched matrix (in its own dtype, so the copy is exact) and yields the
    differences in float64, one matrix at a time, ready for :meth:`NormMonitor.update`: memory is one
    copy of the watched weights plus one matrix's delta.
    """

    def __init__(self, matrices: Sequence[MatrixInfo], weight_of: WeightReader) -> None:
        self.matrices = list(matrices)
        self.weight_of = weight_of
        with torch.no_grad():
            self._last = {m.param_name: weight_of(m).detach().clone() for m in self.matrices}

    def since_last(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(param name, W_now − W_last)`` for every watched matrix, computed as it is consumed; each
        ``W_now`` becomes the next call's ``W_last``."""
        for info in self.matrices:
            with torch.no_grad():
                current = self.weight_of(info).detach()
                last = self._last[info.param_name]
                dtype = accumulation_dtype(current.device)
                delta = current.to(dtype) - last.to(dtype)
                last.copy_(current)
            yield info.param_name, delta
