"""The vector epilogue (`tdsl.runtime.requant.requant_block`) gives the scalar formula's bytes."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from tdsl.runtime.requant import LANES, requant_block

BLOCK = 4 * LANES

F = np.float32


@njit
def run_block(acc, a0, corr, se, bias, o0, res, rbase, has_res, rs, rzf, amin, amax, inv, zf, dst, dbase, n8=4):
    requant_block(acc, a0, corr, se, bias, o0, res, rbase, has_res, rs, rzf, amin, amax, inv, zf, dst, dbase, n8)


def numpy_block(acc, corr, se, bias, res, rs, rzf, amin, amax, inv, zf):
    """The scalar epilogue's arithmetic, in numpy float32 (every operation rounds to float32)."""
    v = ((acc.astype(F) - corr) * se).astype(F) + bias
    if res is not None:
        v = v + (res.astype(F) - F(rzf)) * F(rs)
    v = np.minimum(np.maximum(v, F(amin)), F(amax))
    q = np.minimum(np.maximum(np.rint(v * F(inv)) + F(zf), F(0)), F(255))
    return q.astype(np.int32).astype(np.uint8)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("clamp", [(-np.inf, np.inf), (0.0, np.inf), (0.0, 6.0)])
def test_requant_block_gives_the_scalar_bytes(residual, clamp):
    rng = np.random.default_rng(3)
    o0, a0, dbase, rbase = 32, 2 * BLOCK, 5, 7  # offsets into larger arrays, unaligned u8 ends
    acc = rng.integers(-4000, 4000, 4 * BLOCK).astype(np.int32)
    acc[a0:a0 + 4] = [0, 2**24 + 1, -(2**24) - 3, 1000]  # large sums round in float32 as in the scalar code
    corr = rng.integers(-300, 300, 3 * BLOCK).astype(F)
    se = rng.uniform(1e-4, 2e-3, 3 * BLOCK).astype(F)
    bias = rng.standard_normal(3 * BLOCK).astype(F)
    res = rng.integers(0, 256, rbase + BLOCK + 3).astype(np.uint8)
    inv, zf = F(1 / 0.037), F(11)
    # values that land on .5 after scaling: rint must round half to even, as np.rint
    se[o0 + 5], corr[o0 + 5], bias[o0 + 5], acc[a0 + 5] = F(0.5), F(0), F(0), 3
    dst = np.full(dbase + BLOCK + 4, 77, np.uint8)
    run_block(acc, a0, corr, se, bias, o0, res, rbase, int(residual), F(0.02), F(131), F(clamp[0]), F(clamp[1]),
              inv, zf, dst, dbase)
    want = numpy_block(acc[a0:a0 + BLOCK], corr[o0:o0 + BLOCK], se[o0:o0 + BLOCK], bias[o0:o0 + BLOCK],
                       res[rbase:rbase + BLOCK] if residual else None, 0.02, 131, clamp[0], clamp[1], inv, zf)
    np.testing.assert_array_equal(dst[dbase:dbase + BLOCK], want)
    assert (dst[:dbase] == 77).all() and (dst[dbase + BLOCK:] == 77).all()  # nothing written outside the block
    assert len(np.unique(want)) > 8  # the case spans the range, not one clamped value


def test_requant_block_rounds_half_to_even():
    acc = np.array([1, 3, 5, -1] + [0] * (BLOCK - 4), np.int32)
    ones = np.ones(BLOCK, F)
    dst = np.zeros(BLOCK, np.uint8)
    run_block(acc, 0, np.zeros(BLOCK, F), ones * F(0.5), np.zeros(BLOCK, F), 0, np.zeros(0, np.uint8), 0, 0,
              F(0), F(0), F(-np.inf), F(np.inf), F(1), F(10), dst, 0)
    assert dst[:4].tolist() == [10, 12, 12, 10]  # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0


def test_requant_block_writes_only_its_vectors():
    acc = np.arange(BLOCK, dtype=np.int32)
    dst = np.full(BLOCK, 99, np.uint8)
    ones = np.ones(BLOCK, F)
    run_block(acc, 0, np.zeros(BLOCK, F), ones, np.zeros(BLOCK, F), 0, np.zeros(0, np.uint8), 0, 0, F(0), F(0),
              F(-np.inf), F(np.inf), F(1), F(0), dst, 0, 2)
    assert dst[:16].tolist() == list(range(16)) and (dst[16:] == 99).all()
