"""Property tests of the closed-form updates (float64, random problems)."""

from __future__ import annotations

import itertools

import pytest
import torch
from tolerances import assert_close_rel, op_norm

from seqedit.editors.solvers import (
    equality_constrained_update,
    least_squares_update,
    null_space_projector,
    null_space_update,
    rank_one_update,
)

D_IN, D_OUT, N = 24, 10, 5


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    resid = torch.randn(N, D_OUT, generator=g, dtype=torch.float64)
    k0 = torch.randn(D_IN, 200, generator=g, dtype=torch.float64)
    return keys, resid, k0 @ k0.T / 200


def test_least_squares_maps_keys_to_targets_when_preservation_is_weak():
    keys, resid, cov = _problem()
    delta = least_squares_update(keys, resid, 1e-8 * cov)
    # The weak preservation term (1e-8 of the covariance) moves the fit by about that fraction.
    assert_close_rel(delta @ keys.T, resid.T, rel=1e-5)


def test_least_squares_equals_closed_form_and_is_stationary():
    keys, resid, cov = _problem(1)
    lam_p, lam_n = 3.0, 0.7
    delta = least_squares_update(keys, resid, lam_p * cov, lam_n)
    k, r = keys.T, resid.T
    closed = r @ k.T @ torch.linalg.inv(lam_p * cov + k @ k.T + lam_n * torch.eye(D_IN, dtype=torch.float64))
    assert_close_rel(delta, closed, rel=1e-10)
    # Gradient of ‖ΔK - R‖² + λ_p tr(ΔCΔᵀ) + λ_n‖Δ‖² vanishes at the solution: small against the size of
    # its terms (‖R Kᵀ‖, the term the solve has to cancel).
    grad = (delta @ k - r) @ k.T + lam_p * delta @ cov + lam_n * delta
    assert float(grad.abs().max()) < 1e-10 * float((r @ k.T).abs().max())


def test_norm_of_update_falls_monotonically_with_lambda():
    keys, resid, cov = _problem(2)
    norms = [float(least_squares_update(keys, resid, 10.0 * cov, lam).norm()) for lam in [0, 0.1, 1, 10, 100, 1000]]
    assert all(a > b for a, b in itertools.pairwise(norms)), norms
    assert norms[-1] < 0.2 * norms[0]


def test_equality_constrained_update_is_exact_and_minimal():
    keys, resid, cov = _problem(3)
    delta = equality_constrained_update(keys, resid, 5.0 * cov)
    assert_close_rel(delta @ keys.T, resid.T, rel=1e-10)
    # Any other solution Δ + N with N K = 0 costs more in the C metric.
    g = torch.Generator().manual_seed(9)
    q, _ = torch.linalg.qr(keys.T, mode="complete")
    null_basis = q[:, N:]  # orthogonal to every key
    other = delta + torch.randn(D_OUT, D_IN - N, generator=g, dtype=torch.float64) @ null_basis.T
    assert_close_rel(other @ keys.T, resid.T, rel=1e-10, scale=op_norm(other) * op_norm(keys))
    assert torch.trace(other @ cov @ other.T) > torch.trace(delta @ cov @ delta.T)


def test_equality_ridge_trades_exactness():
    keys, resid, cov = _problem(4)
    exact = equality_constrained_update(keys, resid, cov)
    ridged = equality_constrained_update(keys, resid, cov, ridge=0.5)
    assert (ridged @ keys.T - resid.T).norm() > 1e-3
    assert ridged.norm() < exact.norm()


def test_rank_one_update():
    keys, resid, cov = _problem(5)
    delta = rank_one_update(keys[0], resid[0], cov)
    assert_close_rel(delta @ keys[0], resid[0], rel=1e-10)
    assert torch.linalg.matrix_rank(delta) == 1
    # The scale of C cancels (ROME's λ_p is irrelevant).
    torch.testing.assert_close(rank_one_update(keys[0], resid[0], 1000 * cov), delta)


def _rank_deficient_moment(rank: int, seed: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(D_IN, rank, generator=g, dtype=torch.float64))[0]
    k0 = basis @ torch.randn(rank, 300, generator=g, dtype=torch.float64)
    return k0, k0 @ k0.T / 300


def test_null_space_projector():
    k0, moment = _rank_deficient_moment(rank=14)
    space = null_space_projector(moment, threshold=1e-8)
    assert space.dim == D_IN - 14
    p = space.projector
    assert_close_rel(p @ p, p, rel=1e-10, scale=1.0)  # an orthogonal projector has norm 1
    # Keys in the preserved span are annihilated, to rounding relative to their size.
    assert float((p @ k0).abs().max()) < 1e-10 * op_norm(k0)
    with pytest.raises(ValueError):
        null_space_projector(moment, threshold=0)


def test_alphaedit_update_leaves_preserved_keys_unchanged_and_reaches_targets():
    k0, moment = _rank_deficient_moment(rank=14)
    p = null_space_projector(moment, threshold=1e-8).projector
    keys, resid, _ = _problem(7)
    g = torch.Generator().manual_seed(8)
    past = torch.randn(3, D_IN, generator=g, dtype=torch.float64)
    delta = null_space_update(keys, resid, p, past.T @ past, l2=1e-6)
    # Preserved keys' outputs do not move: by construction (the solved update is projected onto the null
    # space), to rounding relative to ‖Δ‖·‖K₀‖, however ill-conditioned the solve (λ = 1e-6 here).
    assert float((delta @ k0).abs().max()) < 1e-12 * op_norm(delta) * op_norm(k0)
    # The edited keys reach their targets (λ small; the null space has room for 5 keys + 3 past keys).
    assert_close_rel(delta @ keys.T, resid.T, rel=1e-3)
    # The past edits' keys are preserved too (soft constraint, small λ): small next to the edit's outputs.
    assert float((delta @ past.T).abs().max()) < 1e-3 * float(resid.abs().max())
    # A larger λ shrinks the update.
    assert null_space_update(keys, resid, p, past.T @ past, l2=10.0).norm() < delta.norm()


def test_shapes_are_checked():
    keys, resid, cov = _problem()
    with pytest.raises(ValueError):
        least_squares_update(keys, resid[:2], cov)
    with pytest.raises(ValueError):
        least_squares_update(keys, resid, cov[:3, :3])
    with pytest.raises(ValueError):
        least_squares_update(keys, resid, cov, norm_lambda=-1)
