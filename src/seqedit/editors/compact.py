"""Exact, compact encodings of low-rank weight deltas (what a run directory's ledger stores).

A locate-and-edit batch of ``n`` facts changes a matrix by a rank-``≤ n`` update, computed in float64 and
rounded to the weight's dtype when it is added. Storing that rounded delta densely costs the whole matrix
per step (MEMIT on SmolLM2: 17.7 MB per batch). This module stores instead

* ``left [rows, r]`` and ``right [cols, r]`` (float64), a factorisation of the float64 delta,
* the delta rebuilt as ``round(Σ_k left[:, k] ⊗ right[:, k])``, summed one rank-one term at a time with
  elementwise IEEE operations only (no BLAS, whose blocking and fused multiply-adds vary between machines),
  so the rebuilt tensor is the same on every machine,
* ``fix_index``/``fix_value``: the few entries where that rebuilt tensor differs from the committed delta
  (where the factorisation's ~1e-13 relative error crosses a rounding boundary), stored verbatim,
* a SHA-256 of the committed delta's bytes, checked on every decode.

So decoding gives the committed delta bit for bit, or an error: never a silently different model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

# The range finder's own generator: the factors of a delta never depend on the global RNG state (any
# fixed value does; the result is exact to float64 whatever the sample).
RANGE_FINDER_SEED = 0

# A factorisation is kept only if it is at most this share of the dense tensor's size.
MAX_SHARE = 0.5
_OVERSAMPLE = 4


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (bit-exact identity, signed zeros and NaN payloads included)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def product(left: torch.Tensor, right: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``left @ right.T`` in float64, one rank-one term at a time (machine-independent), rounded to ``dtype``."""
    rows, cols = left.shape[0], right.shape[0]
    out = torch.zeros(rows, cols, dtype=torch.float64)
    term = torch.empty_like(out)
    for k in range(left.shape[1]):
        torch.mul(left[:, k : k + 1], right[:, k], out=term)  # exact-rounded products
        out.add_(term)  # exact-rounded sums, in the order k = 0, 1, ...
    return out.to(dtype)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns as integers, so comparisons are bitwise (-0.0 differs from 0.0)."""
    ints = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[tensor.element_size()]
    return tensor.contiguous().view(ints)


def low_rank_factors(exact: torch.Tensor, max_rank: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(left, right)`` with ``left @ right.T == exact`` to float64 precision, or None above ``max_rank``.

    A randomised range finder (Halko et al. 2011) with a growing sample: the numerical rank is found once a
    sample of ``k`` columns spans fewer than ``k`` directions.
    """
    a = exact.detach().to("cpu", torch.float64)
    rows, cols = a.shape
    if not bool(a.any()):
        return a.new_zeros(rows, 0), a.new_zeros(cols, 0)
    generator = torch.Generator().manual_seed(RANGE_FINDER_SEED)
    k = min(16, rows, cols)
    while True:
        omega = torch.randn(cols, k, generator=generator, dtype=torch.float64)
        q, _ = torch.linalg.qr(a @ omega)
        b = q.T @ a  # [k, cols]
        u, s, vh = torch.linalg.svd(b, full_matrices=False)
        tol = float(s[0]) * max(rows, cols) * torch.finfo(torch.float64).eps
        rank = int((s > tol).sum())
        if rank < k or k == min(rows, cols):
            break  # the sample spans the whole range
        if k > max_rank:
            return None  # the rank is at least k
        k = min(2 * k, rows, cols)
    if rank > max_rank:
        return None
    left = (q @ u[:, :rank]) * s[:rank]
    right = vh[:rank].T.contiguous()
    return left.contiguous(), right


@dataclass(frozen=True)
class CompactDelta:
    """One committed delta as low-rank factors plus verbatim fix-ups (see the module docstring)."""

    left: torch.Tensor
    right: torch.Tensor
    fix_index: torch.Tensor
    fix_value: torch.Tensor
    digest: str

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.left, self.right, self.fix_index, self.fix_value))

    def decode(self, name: str = "delta") -> torch.Tensor:
        dense = product(self.left, self.right, self.fix_value.dtype)
        flat = dense.view(-1)
        flat[self.fix_index] = self.fix_value
        if tensor_digest(dense) != self.digest:
            raise ValueError(f"the compact encoding of {name} does not reproduce the recorded delta (checksum differs)")
        return dense

    @classmethod
    def encode(cls, exact: torch.Tensor, committed: torch.Tensor, max_share: float = MAX_SHARE) -> CompactDelta | None:
        """Encode ``committed`` (the delta added to the weight) using ``exact``, the higher-precision delta it
        was rounded from. None when the result would not be at most ``max_share`` of the dense size."""
        if committed.dim() != 2 or tuple(exact.shape) != tuple(committed.shape) or not committed.is_floating_point():
            return None
        committed = committed.detach().to("cpu").contiguous()
        rows, cols = committed.shape
        budget = max_share * committed.numel() * committed.element_size()
        max_rank = int(budget // ((rows + cols) * 8))
        if max_rank < 1:
            return None
        factors = low_rank_factors(exact, max_rank)
        if factors is None:
            return None
        left, right = factors
        rebuilt = product(left, right, committed.dtype)
        wrong = (_bits(rebuilt) != _bits(committed)).view(-1).nonzero().view(-1)
        encoded = cls(left, right, wrong, committed.view(-1)[wrong].clone(), tensor_digest(committed))
        return encoded if encoded.nbytes <= budget else None
