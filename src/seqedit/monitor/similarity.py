"""Representation-similarity math on activation matrices ``[n_samples, d_features]`` (pure functions).

All computations run in float64 on the inputs' device.
"""

from __future__ import annotations

import torch


def _as_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim != 2:
        raise ValueError(f"{name} must be [n_samples, d_features], got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least two samples, got {x.shape[0]}")
    return x.to(torch.float64)


def pca_basis(x: torch.Tensor, k: int) -> torch.Tensor:
    """Orthonormal basis ``[d, k]`` of the top-``k`` principal directions of ``x`` (rows centred).

    Uses the eigendecomposition of the smaller of the covariance (``d × d``) and Gram (``n × n``)
    matrices: the same subspace as an SVD of the data, at about a third of the cost.
    """
    data = _as_matrix(x, "x")
    n, d = data.shape
    if not 1 <= k <= min(n - 1, d):
        raise ValueError(f"k={k} principal directions need 1 <= k <= min(n-1, d) = {min(n - 1, d)}")
    centred = data - data.mean(0, keepdim=True)
    if d <= n:
        _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        return vectors[:, -k:].flip(-1)
    _, vectors = torch.linalg.eigh(centred @ centred.T)
    directions = centred.T @ vectors[:, -k:].flip(-1)  # right singular vectors, up to scale
    return torch.linalg.qr(directions).Q


def angles_between_subspaces(basis_a: torch.Tensor, basis_b: torch.Tensor) -> torch.Tensor:
    """Principal angles (degrees, ascending) between the spans of two orthonormal bases ``[d, k]``.

    The cosines of the principal angles are the singular values of ``AᵀB`` (Björck & Golub 1973).
    """
    if basis_a.shape != basis_b.shape:
        raise ValueError(f"bases differ in shape: {tuple(basis_a.shape)} vs {tuple(basis_b.shape)}")
    cosines = torch.linalg.svdvals(basis_a.to(torch.float64).T @ basis_b.to(torch.float64)).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cosines)).sort().values


def principal_angles(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Principal angles (degrees, ascending, ``[k]``) between the top-``k`` PCA subspaces of ``a`` and ``b``.

    0° everywhere: the dominant directions are unchanged; 90°: a direction of one has no component in
    the other's subspace.
    """
    return angles_between_subspaces(pca_basis(a, k), pca_basis(b, k))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between paired samples ``x`` and ``y``.

    ``CKA = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F)`` on column-centred data: 1 for identical representations,
    invariant to orthogonal transforms and isotropic scaling, near 0 for independent data when
    ``n ≫ d``. The Gram form is used when samples are fewer than features (same value, less work).
    """
    a, b = _as_matrix(x, "x"), _as_matrix(y, "y")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"CKA needs paired samples: {a.shape[0]} vs {b.shape[0]} rows")
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    if a.shape[0] <= min(a.shape[1], b.shape[1]):
        ka, kb = a @ a.T, b @ b.T
        cross, self_a, self_b = (ka * kb).sum(), (ka * ka).sum(), (kb * kb).sum()
    else:
        cross = (b.T @ a).pow(2).sum()
        self_a, self_b = (a.T @ a).pow(2).sum(), (b.T @ b).pow(2).sum()
    denominator = torch.sqrt(self_a * self_b)
    if denominator == 0:
        return float("nan")  # a constant representation has no similarity structure
    return float(cross / denominator)


def paired_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cosine similarity between row ``i`` of ``x`` and row ``i`` of ``y`` (same token, same probe)."""
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(
            f"paired_cosine needs two [n, d] matrices of equal shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    cos = torch.nn.functional.cosine_similarity(x.to(torch.float64), y.to(torch.float64), dim=1, eps=1e-12)
    return float(cos.mean())


def mean_row_norm(x: torch.Tensor) -> float:
    """Mean Euclidean norm of the rows (the average activation norm per token)."""
    return float(x.to(torch.float64).norm(dim=-1).mean())


def energy_outside(x: torch.Tensor, basis: torch.Tensor) -> float:
    """Share of the (row-centred) energy of ``x`` outside the span of the orthonormal ``basis`` ``[d, k]``:
    ``1 - ‖X̃ U‖_F² / ‖X̃‖_F²``. 0: every direction of variation lies in the subspace; near 1: none does."""
    data = _as_matrix(x, "x")
    centred = data - data.mean(0, keepdim=True)
    total = centred.pow(2).sum()
    if total == 0:
        return float("nan")
    inside = (centred @ basis.to(device=centred.device, dtype=torch.float64)).pow(2).sum()
    return float((1 - inside / total).clamp(min=0.0))
