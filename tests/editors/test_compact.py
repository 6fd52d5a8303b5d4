"""The compact delta encoding decodes to the committed delta bit for bit, or fails loudly."""

from __future__ import annotations

import pytest
import torch

from seqedit.editors.base import EditResult
from seqedit.editors.compact import CompactDelta, low_rank_factors, product


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _locate_like_delta(rows: int, cols: int, rank: int, seed: int = 0) -> torch.Tensor:
    """``R Kᵀ A⁻¹`` in float64, the shape of a locate-and-edit update of ``rank`` facts."""
    g = torch.Generator().manual_seed(seed)
    resid = torch.randn(rows, rank, generator=g, dtype=torch.float64)
    keys = torch.randn(cols, rank, generator=g, dtype=torch.float64)
    a = torch.randn(cols, cols, generator=g, dtype=torch.float64)
    return (resid @ keys.T) @ torch.linalg.inv(a @ a.T / cols + torch.eye(cols, dtype=torch.float64)) * 1e-2


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_round_trip_is_bit_exact_and_small(rank):
    exact = _locate_like_delta(48, 130, rank)
    committed = exact.to(torch.float32)
    packed = CompactDelta.encode(exact, committed)
    assert packed is not None and packed.left.shape[1] == rank
    assert packed.nbytes < 0.5 * committed.numel() * 4
    assert torch.equal(_bits(packed.decode()), _bits(committed))


def test_entries_the_factors_miss_are_stored_verbatim():
    exact = _locate_like_delta(40, 60, 2)
    committed = exact.to(torch.float32)
    committed[3, 7] = -0.0  # differs from the product (a signed zero: only a bitwise comparison sees it)
    committed[5, 9] += 1.0
    packed = CompactDelta.encode(exact, committed)
    assert packed is not None
    assert {3 * 60 + 7, 5 * 60 + 9} <= set(packed.fix_index.tolist())
    assert torch.equal(_bits(packed.decode()), _bits(committed))


def test_a_damaged_encoding_is_refused():
    exact = _locate_like_delta(40, 60, 2)
    packed = CompactDelta.encode(exact, exact.to(torch.float32))
    assert packed is not None
    damaged = CompactDelta(packed.left * (1 + 1e-9), packed.right, packed.fix_index, packed.fix_value, packed.digest)
    with pytest.raises(ValueError, match="checksum"):
        damaged.decode()


def test_full_rank_deltas_stay_dense():
    exact = torch.randn(40, 60, dtype=torch.float64)
    assert low_rank_factors(exact, max_rank=5) is None
    assert CompactDelta.encode(exact, exact.to(torch.float32)) is None
    # Low rank, but above half the dense size (48x130 float32: rank <= 8): dense too.
    assert CompactDelta.encode(_locate_like_delta(48, 130, 12), _locate_like_delta(48, 130, 12).float()) is None


def test_zero_delta_has_rank_zero():
    zero = torch.zeros(8, 9, dtype=torch.float64)
    packed = CompactDelta.encode(zero, zero.to(torch.float32))
    assert packed is not None and packed.left.shape == (8, 0)
    assert torch.equal(packed.decode(), torch.zeros(8, 9))


def test_product_adds_rank_one_terms_in_order():
    left = torch.tensor([[1e16, 1.0, -1e16]], dtype=torch.float64)
    right = torch.ones(1, 3, dtype=torch.float64)
    # (1e16 + 1) - 1e16 = 0 in float64 when summed left to right; a BLAS dot may give 1.
    assert product(left, right, torch.float64).item() == 0.0


def test_edit_result_saves_compact_and_dense_and_loads_both(tmp_path):
    exact = _locate_like_delta(30, 50, 2)
    dense_only = torch.randn(5, 5)
    result = EditResult("memit", {"a": exact.to(torch.float32), "b": dense_only}, precise={"a": exact},
                        request_stats=[{"case_id": "1"}])
    result.save(tmp_path / "compact.safetensors")
    result.save(tmp_path / "dense.safetensors", compact=False)
    assert (tmp_path / "compact.safetensors").stat().st_size < (tmp_path / "dense.safetensors").stat().st_size
    for name in ("compact", "dense"):
        loaded = EditResult.load(tmp_path / f"{name}.safetensors")
        assert sorted(loaded.deltas) == ["a", "b"] and loaded.request_stats == [{"case_id": "1"}]
        for key, value in result.deltas.items():
            assert torch.equal(_bits(loaded.deltas[key]), _bits(value)), (name, key)
