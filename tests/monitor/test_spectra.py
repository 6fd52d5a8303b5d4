"""Spectrum figures against matrices whose singular values are known by construction."""

from __future__ import annotations

import math

import pytest
import torch

from seqedit.monitor.spectra import spectrum


def _with_singular_values(values, rows=6, cols=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, rows, generator=generator, dtype=torch.float64)).Q[:, : len(values)]
    v = torch.linalg.qr(torch.randn(cols, cols, generator=generator, dtype=torch.float64)).Q[:, : len(values)]
    return u @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v.T


def test_known_spectrum_and_its_figures():
    values = [4.0, 2.0, 1.0, 1.0, 0.5, 0.5]
    s = spectrum(_with_singular_values(values), top_k=2)
    assert s.singular_values == pytest.approx(values, rel=1e-12)
    energy = sum(v * v for v in values)
    assert s.top_energy_share == pytest.approx((16 + 4) / energy, rel=1e-12)
    assert s.stable_rank == pytest.approx(energy / 16, rel=1e-12)
    assert s.condition_number == pytest.approx(8.0, rel=1e-12)
    p = [v / sum(values) for v in values]
    assert s.effective_rank == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)), rel=1e-12)


def test_equal_singular_values_have_full_effective_rank():
    s = spectrum(_with_singular_values([3.0] * 5, rows=5, cols=7))
    assert s.effective_rank == pytest.approx(5.0, rel=1e-10)
    assert s.condition_number == pytest.approx(1.0, rel=1e-10)
    with pytest.raises(ValueError, match="matrix"):
        spectrum(torch.ones(3))
