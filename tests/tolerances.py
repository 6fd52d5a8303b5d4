"""Tolerances relative to the problem's scale, so a test passes on any machine's rounding, not only the one
it was written on. An absolute tolerance like ``1e-8`` means something different for a matrix of entries
near 1e-3 and one near 1e3; these helpers make every bound a fraction of the quantities being compared."""

from __future__ import annotations

import torch


def scale_of(*tensors: torch.Tensor) -> float:
    """The largest magnitude among the tensors (never 0, so a bound built from it is never vacuous-strict)."""
    largest = max(float(t.detach().abs().max()) for t in tensors if t.numel())
    return largest if largest > 0 else float(torch.finfo(torch.float64).tiny)


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float, scale: float | None = None) -> None:
    """``|actual - expected| <= rel * scale`` elementwise, ``scale`` defaulting to the largest magnitude of
    either tensor (a relative error measured against the problem, not against each entry)."""
    bound = rel * (scale if scale is not None else scale_of(actual, expected.to(actual.dtype)))
    torch.testing.assert_close(actual, expected.to(actual.dtype), atol=bound, rtol=0)


def op_norm(matrix: torch.Tensor) -> float:
    """Spectral norm (largest singular value) of a 2-D tensor."""
    return float(torch.linalg.matrix_norm(matrix.double(), ord=2))
