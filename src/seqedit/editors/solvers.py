"""The closed-form weight updates of locate-and-edit methods, written once.

Notation (canonical layout, ``W`` is ``[d_out, d_in]``, ``y = W k``): ``keys`` holds the edited facts' keys as
rows (``K = keysᵀ`` is ``[d_in, n]``); ``resid`` holds, per fact, the change the update must make to the
layer's output (``R = residᵀ`` is ``[d_out, n]``); ``preserve`` is the preservation matrix, e.g.
``λ_p·E[k kᵀ]`` plus the Gram matrix of past edits' keys. Every solve runs in float64 (as in the papers'
code) on the device of its inputs; callers cast the result back.

* :func:`least_squares_update` -- MEMIT (Meng et al. 2023, eq. 14) with ENCORE's Frobenius-norm penalty
  (Gupta et al. 2025): ``argmin ‖(W+Δ)K - V‖² + tr(Δ·preserve·Δᵀ) + λ_n‖Δ‖²``, i.e.
  ``Δ = R Kᵀ (preserve + K Kᵀ + λ_n I)⁻¹``.
* :func:`equality_constrained_update` -- EMMET (Gupta et al. 2024, "A Unified Framework for Model
  Editing"): ``argmin tr(Δ·preserve·Δᵀ)`` subject to ``Δ K = R``, i.e. ``Δ = R (Kᵀ C⁻¹ K)⁻¹ Kᵀ C⁻¹`` with
  ``C = preserve``; a ridge on ``Kᵀ C⁻¹ K`` (EMMET's ``emmet_lambda``) guards against ill-conditioning.
* :func:`rank_one_update` -- ROME (Meng et al. 2022, eq. 2): the equality-constrained update for one key.
* :func:`null_space_projector` / :func:`null_space_update` -- AlphaEdit (Fang et al. 2025): project the
  update onto the null space of the preserved keys, ``P = Û Ûᵀ`` over the eigenvectors of ``E[k kᵀ]`` whose
  eigenvalues are below a threshold, and solve ``Δ = R Kᵀ P (M P + λ I)⁻¹`` with ``M = K_p K_pᵀ + K Kᵀ``
  (written, as in the released code, as the transposed system ``(P M + λ I) Δᵀ = P K Rᵀ``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _f64(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.to(device=device, dtype=torch.float64)


def solve_device(device: torch.device) -> torch.device:
    """Where float64 solves can run: the model's device, except on MPS (no float64 there)."""
    return torch.device("cpu") if device.type == "mps" else device


def _check(keys: torch.Tensor, resid: torch.Tensor, preserve: torch.Tensor | None = None) -> None:
    if keys.dim() != 2 or resid.dim() != 2 or keys.shape[0] != resid.shape[0]:
        raise ValueError(f"keys [n, d_in] and resid [n, d_out] must have the same n; got {tuple(keys.shape)}, "
                         f"{tuple(resid.shape)}")
    if preserve is not None and preserve.shape != (keys.shape[1], keys.shape[1]):
        raise ValueError(f"preserve must be [{keys.shape[1]}, {keys.shape[1]}], got {tuple(preserve.shape)}")


def least_squares_update(
    keys: torch.Tensor, resid: torch.Tensor, preserve: torch.Tensor | None, norm_lambda: float = 0.0
) -> torch.Tensor:
    """``Δ = R Kᵀ (preserve + K Kᵀ + λ_n I)⁻¹`` (MEMIT; with ``λ_n > 0`` the ENCORE norm constraint)."""
    _check(keys, resid, preserve)
    if norm_lambda < 0:
        raise ValueError(f"norm_lambda must be >= 0, got {norm_lambda}")
    device = keys.device
    k = _f64(keys, device).T  # [d_in, n]
    r = _f64(resid, device).T  # [d_out, n]
    a = k @ k.T
    if preserve is not None:
        a = a + _f64(preserve, device)
    if norm_lambda:
        a = a + norm_lambda * torch.eye(a.shape[0], dtype=a.dtype, device=device)
    # A is symmetric, so (R Kᵀ A⁻¹) = (A⁻¹ K Rᵀ)ᵀ = R (A⁻¹ K)ᵀ.
    return r @ torch.linalg.solve(a, k).T


def equality_constrained_update(
    keys: torch.Tensor, resid: torch.Tensor, preserve: torch.Tensor, ridge: float = 0.0
) -> torch.Tensor:
    """``Δ = R (Kᵀ C⁻¹ K + ridge·I)⁻¹ Kᵀ C⁻¹`` with ``C = preserve`` (EMMET; ROME for one key)."""
    _check(keys, resid, preserve)
    device = keys.device
    k = _f64(keys, device).T
    r = _f64(resid, device).T
    c_inv_k = torch.linalg.solve(_f64(preserve, device), k)  # [d_in, n]
    d = k.T @ c_inv_k
    if ridge:
        d = d + ridge * torch.eye(d.shape[0], dtype=d.dtype, device=device)
    return r @ torch.linalg.solve(d, c_inv_k.T)


def rank_one_update(key: torch.Tensor, resid: torch.Tensor, preserve: torch.Tensor) -> torch.Tensor:
    """ROME: ``Δ = r (C⁻¹k)ᵀ / (kᵀ C⁻¹ k)``: the smallest update (in the ``C`` metric) with ``Δk = r``."""
    return equality_constrained_update(key.reshape(1, -1), resid.reshape(1, -1), preserve)


@dataclass(frozen=True)
class NullSpace:
    projector: torch.Tensor  # [d_in, d_in] float64
    dim: int  # number of eigenvalues below the threshold
    threshold: float
    max_eigenvalue: float


def null_space_projector(moment: torch.Tensor, threshold: float) -> NullSpace:
    """AlphaEdit's ``P = Û Ûᵀ`` from the eigenvectors of ``E[k kᵀ]`` with eigenvalue ``< threshold``."""
    if threshold <= 0:
        raise ValueError(f"null-space threshold must be > 0, got {threshold}")
    sym = _f64(moment, moment.device)
    sym = (sym + sym.T) / 2
    eigenvalues, eigenvectors = torch.linalg.eigh(sym)
    small = eigenvalues < threshold
    basis = eigenvectors[:, small]
    return NullSpace(basis @ basis.T, int(small.sum()), threshold, float(eigenvalues.max()))


def null_space_update(
    keys: torch.Tensor,
    resid: torch.Tensor,
    projector: torch.Tensor,
    past_gram: torch.Tensor | None,
    l2: float,
) -> torch.Tensor:
    """AlphaEdit: ``Δᵀ = (P (K_p K_pᵀ + K Kᵀ) + λ I)⁻¹ P K Rᵀ``. The solution lies in the range of ``P``
    (``λ Δᵀ = P(K Rᵀ - M Δᵀ)``), so ``Δ k = 0`` for every key in the null space's complement.

    The solve's rounding error grows with the system's condition number (about ``‖M‖/λ``), so the solved
    ``Δᵀ`` is projected by ``P`` once more: exact arithmetic gives the same update, and in floating point the
    preserved keys then stay unchanged to the projector's accuracy, whatever ``λ`` is."""
    _check(keys, resid, projector)
    if l2 <= 0:
        raise ValueError(f"AlphaEdit's L2 weight must be > 0, got {l2}")
    device = keys.device
    k = _f64(keys, device).T
    r = _f64(resid, device).T
    p = _f64(projector, device)
    m = k @ k.T
    if past_gram is not None:
        m = m + _f64(past_gram, device)
    lhs = p @ m + l2 * torch.eye(m.shape[0], dtype=m.dtype, device=device)
    return (p @ torch.linalg.solve(lhs, p @ k @ r.T)).T
