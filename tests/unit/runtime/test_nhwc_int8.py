"""The NHWC int8 runtime (tdsl.runtime.nhwc_int8, microkernels) against numpy.

The integer accumulators of every micro-kernel must equal numpy's exact int64 convolution of
the quantised input (padding reads the zero point, so it adds z_x * T: what the epilogue's
correction removes), every table row must give the same bits, and the epilogue must requantise
like the numpy formula. Shapes cover channel counts that are not multiples of the 32-channel
block or of 4 (padded rows), pixels that are not multiples of MR or of a task, strides,
padding, dilation, the gathered stem (few channels) and depthwise convs.
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

from tdsl.runtime import isa
from tdsl.runtime import microkernels as mk
from tdsl.runtime import nhwc_int8 as q8
from tdsl.runtime.isa import claim

NO_GEOM = np.zeros(14, np.int64)

VNNI = ("avx512_vnni", "avx_vnni")
KINDS = [pytest.param(row.code, id=row.name if row.available() or row.isa not in VNNI else row.name + "-emulated",
                      marks=pytest.mark.skipif(not row.available() and row.isa not in VNNI,
                                               reason=f"this CPU lacks {row.isa}"))
         for row in mk.TABLE if row.panel in mk.PANELS]
"""Every row `nhwc_int8.conv` runs; a VNNI row the CPU lacks runs its tile in generic IR (same
integers, `isa.dpbusd` / `isa.dpwssd`): the k4x32 panels and the tile's addressing are checked here
either way, the instruction itself where the CPU has it."""

# (N, C, H, W, O, (kh, kw), stride, padding, dilation)
CASES = [
    (1, 3, 9, 8, 5, (3, 3), (1, 1), (1, 1), (1, 1)),       # cp 4, O below one block
    (2, 6, 7, 9, 40, (3, 2), (2, 1), (1, 0), (1, 1)),      # 2 images, strided, 2 blocks
    (1, 5, 11, 10, 33, (3, 3), (1, 2), (2, 3), (2, 3)),    # dilated and padded
    (1, 130, 6, 5, 64, (1, 1), (1, 1), (0, 0), (1, 1)),    # 1x1, 65 pairs: a widen inside the tap
    (1, 128, 5, 3, 32, (1, 1), (1, 1), (0, 0), (1, 1)),    # 1x1, 64 pairs: the longest sum kept in i16
    (1, 64, 10, 9, 160, (3, 3), (1, 1), (1, 1), (1, 1)),   # 5 blocks: two tasks along channels
]


def quantised_input(case, zp, seed=0):
    N, C, H, W = case[:4]
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (N, C, H, W)).astype(np.uint8)
    cp = mk.padded_channels(C)
    buf = np.full(q8.buffer_size(N, H, W, C), zp, np.uint8)
    rows = buf[:N * H * W * cp].reshape(N, H, W, cp)
    rows[..., :C] = q.transpose(0, 2, 3, 1)
    return q, buf


def numpy_acc(q, t, zp, stride, padding, dilation):
    """Exact int64 sum of T * q over each window, padding read as zp."""
    N, C, H, W = q.shape
    O, _, kh, kw = t.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.full((N, C, H + 2 * ph, W + 2 * pw), zp, np.int64)
    xp[:, :, ph:ph + H, pw:pw + W] = q
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    acc = np.zeros((N, O, Ho, Wo), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh:i * dh + sh * Ho:sh, j * dw:j * dw + sw * Wo:sw]
            acc += np.einsum("nchw,oc->nohw", patch, t[:, :, i, j].astype(np.int64))
    return acc


def weights_of(kind):
    return next(row.weights for row in mk.TABLE if row.code == kind)


def run_conv(kind, case, zp, static=True, seed=0, workers=2, gather=False):
    """(output, float64 reference, task ranges) of one conv by micro-kernel `kind`: ternary
    weights, or for a "-w16" row int16 weights as large as `int16_weights` allows."""
    N, C, H, W, O, (kh, kw), st, pad, dil = case
    rng = np.random.default_rng(seed + 1)
    if weights_of(kind) == "int16":
        k = mk.padded_channels(kh * kw * mk.padded_channels(C))
        qmax = min(32767, (2**31 - 1) // (255 * k))
        t = rng.integers(-qmax, qmax + 1, (O, C, kh, kw)).astype(np.int16)
        t[0, 0, 0, 0] = qmax  # the largest weight and sum the bound allows
    else:
        t = rng.integers(-1, 2, (O, C, kh, kw)).astype(np.int8)
    q, buf = quantised_input(case, zp, seed)
    acc = numpy_acc(q, t, zp, st, pad, dil)
    Ho, Wo = acc.shape[2:]
    cp = mk.padded_channels(C)
    P = N * Ho * Wo
    ntaps, npairs, geom = kh * kw, cp // 2, NO_GEOM
    if gather:  # each pixel's taps gathered into one row of kp bytes, read as one tap
        kp = mk.padded_channels(ntaps * cp)
        rows = np.zeros((O, kh, kw, cp), t.dtype)
        rows[..., :C] = t.transpose(0, 2, 3, 1)
        full = np.zeros((O, kp, 1, 1), t.dtype)
        full[:, :ntaps * cp, 0, 0] = rows.reshape(O, -1)
        panels = mk.panels_of(kind)(full).reshape(-1)
        offs, ntaps, npairs = np.zeros(0, np.int64), 1, kp // 2
        geom = np.array([N, H, W, cp, kh, kw, *st, *pad, *dil, Ho, Wo], np.int64)
    else:
        offs = q8.indirection(N, H, W, cp, kh, kw, *st, *pad, *dil, Ho, Wo)
        panels = mk.panels_of(kind)(t).reshape(-1)
    wsum = t.reshape(O, -1).sum(axis=1).astype(np.int32)
    se = rng.uniform(0.001, 0.01, O).astype(np.float32)
    if t.dtype == np.int16:  # outputs of the same magnitude as the ternary cases'
        se /= np.float32(np.abs(t).max())
    bias = rng.standard_normal(O).astype(np.float32)
    nblocks = -(-O // mk.NR)
    lohi = np.empty((q8.conv_tasks(P, nblocks), 2), np.float32)
    empty = np.zeros(0, np.uint8)
    if static:
        out = np.empty(q8.buffer_size(N, Ho, Wo, O), np.uint8)
        q8.conv(kind, buf, offs, ntaps, npairs, panels, nblocks, P, O, wsum, zp, se, bias, empty, np.float32(0), 0,
                0, out, 1 / 0.05, 7, np.zeros((0, 0), np.float32), lohi, workers, geom)
        got = out[:P * mk.padded_channels(O)].reshape(P, -1)[:, :O]
    else:
        got = np.empty((P, O), np.float32)
        q8.conv(kind, buf, offs, ntaps, npairs, panels, nblocks, P, O, wsum, zp, se, bias, empty, np.float32(0), 0,
                0, empty, 1.0, 0, got, lohi, workers, geom)
    want_v = (acc - zp * wsum[None, :, None, None]).astype(np.float64) * se[None, :, None, None] + bias[None, :, None, None]
    want_v = want_v.transpose(0, 2, 3, 1).reshape(P, O)
    return got, want_v, lohi


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
def test_conv_float_epilogue_equals_numpy_exact_integers(kind, case):
    got, want, lohi = run_conv(kind, case, zp=128, static=False)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 if weights_of(kind) == "ternary" else 1e-3)
    assert lohi[:, 0].min() == got.min() and lohi[:, 1].max() == got.max()


STEMS = CASES[:3] + [(2, 3, 16, 15, 40, (7, 7), (2, 2), (3, 3), (1, 1))]  # few channels; the last a 7x7 stem


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", STEMS)
def test_gathering_conv_equals_numpy_and_the_indirect_conv(kind, case):
    """The stem's producer (each task gathers its pixels' taps: runs, padding, dilation, images
    boundaries) gives numpy's exact sums, and the bits of the indirect producer."""
    got, want, lohi = run_conv(kind, case, zp=9, static=False, gather=True)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5 if weights_of(kind) == "ternary" else 1e-3)
    assert lohi[:, 0].min() == got.min() and lohi[:, 1].max() == got.max()
    np.testing.assert_array_equal(run_conv(kind, case, zp=9, gather=True)[0], run_conv(kind, case, zp=9)[0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES[:3])
def test_conv_static_epilogue_requantises_like_numpy(kind, case):
    got, want, _ = run_conv(kind, case, zp=3, static=True)
    q = np.clip(np.rint(want / 0.05) + 7, 0, 255)
    assert np.abs(got.astype(np.int64) - q).max() <= 1  # float32 vs float64 rounding at .5
    assert np.mean(got == q) > 0.99


@pytest.mark.skipif(not mk.by_name("avx2").available(), reason="this CPU has no AVX2")
@pytest.mark.parametrize("case", CASES)
def test_every_micro_kernel_gives_the_same_bits(case):
    a = run_conv(0, case, zp=17, static=True)[0]
    b = run_conv(1, case, zp=17, static=True)[0]
    np.testing.assert_array_equal(a, b)
    for vnni in (5, 6):  # k4x32 panels: the instruction where the CPU has it, else generic IR
        np.testing.assert_array_equal(run_conv(vnni, case, zp=17, static=True)[0], a)
    a16 = run_conv(3, case, zp=17, static=True)[0]
    b16 = run_conv(4, case, zp=17, static=True)[0]
    np.testing.assert_array_equal(a16, b16)
    assert not np.array_equal(a, a16)  # the int16 case is another computation, not the ternary one again


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("C, kh", [(128, 1), (130, 1), (28, 3)])
@pytest.mark.parametrize("sign", [1, -1])
def test_extreme_sums_are_exact_on_both_sides_of_the_i16_limit(kind, C, kh, sign):
    """Every byte 255 and every weight +-1: the largest sums a tile adds in i16 come back exact
    (64 pairs in one tap: the short path; 65 pairs, and 9 taps of 14 pairs: the widening paths)."""
    H, W, O = 4, 5, 32
    k = kh * kh * mk.padded_channels(C)
    t = np.full((O, C, kh, kh), sign, np.int8 if weights_of(kind) == "ternary" else np.int16)
    buf = np.full(q8.buffer_size(1, H, W, C), 255, np.uint8)
    pad = kh // 2
    offs = q8.indirection(1, H, W, mk.padded_channels(C), kh, kh, 1, 1, pad, pad, 1, 1, H, W)
    panels = mk.panels_of(kind)(t).reshape(-1)
    wsum = t.reshape(O, -1).sum(axis=1).astype(np.int32)
    got = np.empty((H * W, O), np.float32)
    lohi = np.empty((q8.conv_tasks(H * W, 1), 2), np.float32)
    empty = np.zeros(0, np.uint8)
    q8.conv(kind, buf, offs, kh * kh, mk.padded_channels(C) // 2, panels, 1, H * W, O, wsum, 0, np.ones(O, np.float32),
            np.zeros(O, np.float32), empty, np.float32(0), 0, 0, empty, 1.0, 0, got, lohi, 1, NO_GEOM)
    # the zero-point row a padded tap reads holds 255 too, so every tap of every pixel adds 255 * C
    assert (got == sign * 255 * C * kh * kh).all() and k >= C * kh * kh


@pytest.mark.parametrize("static", [True, False])
def test_conv_gives_the_same_bits_whatever_the_number_of_workers(static):
    """Tasks are claimed dynamically (`isa.claim`): whichever worker takes a task, and however
    many there are (one; more than the threads), each output and each task's range is the same."""
    case = CASES[1]
    one = run_conv(0, case, zp=5, static=static, workers=1)
    for workers in (2, 7):
        other = run_conv(0, case, zp=5, static=static, workers=workers)
        np.testing.assert_array_equal(one[0], other[0])
        np.testing.assert_array_equal(one[2], other[2])


def test_claim_hands_out_each_number_once():
    counter = np.zeros(1, np.int64)
    owner, taken = claims(counter, 10_000)
    # every number taken by some worker, and no number twice (the takes add up to n)
    assert (owner >= 0).all() and taken.sum() == 10_000 and counter[0] == 10_000 + 4


@njit(parallel=True)
def claims(counter, n):
    owner = np.full(n, -1, np.int64)
    taken = np.zeros(4, np.int64)
    for w in prange(4):
        while True:
            task = claim(counter)
            if task >= n:
                break
            owner[task] = w
            taken[w] += 1
    return owner, taken


def test_k2x32_panel_layout():
    t = np.arange(2 * 3 * 1 * 1).reshape(2, 3, 1, 1).astype(np.int8) - 2
    p = mk.k2x32_panels(t)
    assert p.shape == (1, 1, 2, 64)  # one block, one tap, cp=4 -> 2 pairs, 32 channels x 2
    # byte 2*o + kk of pair j = weight of channel o at input channel 2j + kk (zero padded)
    assert p[0, 0, 0, 2 * 1 + 1] == t[1, 1, 0, 0] and p[0, 0, 1, 2 * 0 + 0] == t[0, 2, 0, 0]
    assert p[0, 0, 1, 2 * 0 + 1] == 0 and p[0, 0, 0, 2 * 5] == 0


def test_k4x32_panel_layout():
    rng = np.random.default_rng(6)
    t = rng.integers(-1, 2, (40, 6, 1, 2)).astype(np.int8)
    p = mk.k4x32_panels(t)
    assert p.shape == (2, 2, 2, 128)  # 2 blocks, 2 taps, cp=8 -> 2 quads, 32 channels x 4
    # byte 4*o + kk of quad q of tap j = weight of channel 32*b + o at input channel 4q + kk
    assert p[1, 1, 0, 4 * 3 + 2] == t[32 + 3, 2, 0, 1] and p[0, 0, 1, 4 * 17 + 1] == t[17, 5, 0, 0]
    assert p[0, 0, 1, 4 * 17 + 2] == 0 and (p[1, :, :, 4 * 8:] == 0).all()  # channels 6, 7; outputs 40+


def test_quantize_dequantize_round_trip_and_padding_rows():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    lo, hi = q8.minmax(x)
    assert lo == x.min() and hi == x.max()
    scale, zp = q8.qparams(lo, hi)
    buf = np.empty(q8.buffer_size(2, 4, 3, 5), np.uint8)
    q8.quantize_nchw(x, scale, zp, buf)
    rows = buf.reshape(-1, 8)
    assert (rows[-1] == zp).all() and (rows[:-1, 5:] == zp).all()  # the zero-point row and padded channels
    y = np.empty_like(x)
    q8.dequantize_nchw(buf, scale, zp, y)
    assert np.abs(y - x).max() <= scale / 2 + 1e-6


@pytest.mark.parametrize("C", [3, 5])
def test_quantize_input_writes_the_padded_image_and_counts_non_finite_values(C):
    """An RGB image takes the one-word-a-pixel path, other channel counts the byte loop: both
    write numpy's padded NHWC bytes, and count NaN, Inf and values beyond the limit."""
    rng = np.random.default_rng(C)
    x = (3 * rng.standard_normal((2, C, 6, 7))).astype(np.float32)
    scale, zp, ph, pw = 0.05, 100, 1, 2
    cp = mk.padded_channels(C)
    want = np.full((2, 6 + 2 * ph, 7 + 2 * pw, cp), zp, np.uint8)
    want[:, ph:ph + 6, pw:pw + 7, :C] = np.clip(np.rint(x.transpose(0, 2, 3, 1) / np.float32(scale)) + zp, 0, 255)
    buf = np.empty(q8.buffer_size(2, 6 + 2 * ph, 7 + 2 * pw, C), np.uint8)
    assert q8.quantize_input(x, scale, zp, buf, ph, pw, 3.4e38) == 0
    np.testing.assert_array_equal(buf[:-cp].reshape(want.shape), want)
    assert (buf[-cp:] == zp).all()
    plain = np.empty_like(buf)
    q8.quantize_nchw_padded(x, scale, zp, plain, ph, pw)
    np.testing.assert_array_equal(plain, buf)
    x[0, C - 1, 0, 0], x[1, 0, 5, 6], x[1, 1, 2, 3] = np.nan, np.inf, 7e4
    assert q8.quantize_input(x, scale, zp, buf, ph, pw, 3.4e38) == 2
    assert q8.quantize_input(x, scale, zp, buf, ph, pw, 65504.0) == 3


def test_qparams_cover_zero_and_use_the_whole_range_for_relu_outputs():
    assert q8.qparams(0.0, 2.55) == (pytest.approx(0.01), 0)
    s, z = q8.qparams(-1.0, 3.0)
    assert z == round(1.0 / s) and s == pytest.approx(4.0 / 255)
    assert q8.qparams(0.0, 0.0) == (1.0, 0)


@pytest.mark.parametrize("C, k", [(40, 3), (48, 3), (144, 3), (20, 12)])  # i16 vectors + a tail; vectors only;
# 144 channels: 32-lane steps and a 16-lane one (AVX-512BW), or nine 16-lane; 144 taps
def test_depthwise_and_max_pool_match_numpy(C, k):
    rng = np.random.default_rng(3)
    N, H, W, zp = 1, 7 + k, 6 + k, 9
    q, buf = quantised_input((N, C, H, W), zp)
    t = rng.integers(-1, 2, (C, 1, k, k)).astype(np.int8)
    t[0] = 1  # a channel of all +1 taps: the largest sums an i16 lane holds
    q[0, 0] = 255
    buf[:N * H * W * mk.padded_channels(C)].reshape(N, H, W, -1)[..., 0] = 255
    Ho, Wo = (H + 2 - k) // 2 + 1, (W + 2 - k) // 2 + 1  # stride 2, pad 1
    offs = q8.indirection(N, H, W, mk.padded_channels(C), k, k, 2, 2, 1, 1, 1, 1, Ho, Wo)
    wsum = t.reshape(C, -1).sum(axis=1).astype(np.int32)
    se = np.ones(C, np.float32)
    bias = np.zeros(C, np.float32)
    yf = np.empty((N * Ho * Wo, C), np.float32)
    lohi = np.empty((N * Ho, 2), np.float32)
    empty = np.zeros(0, np.uint8)
    q8.depthwise(buf, offs, k * k, C, Wo, np.ascontiguousarray(t.reshape(C, k * k).T), wsum, zp, se, bias, empty,
                 np.float32(0), 0, 0, empty, 1.0, 0, yf, lohi)
    acc = np.stack([numpy_acc(q[:, c:c + 1], t[c:c + 1], zp, (2, 2), (1, 1), (1, 1))[:, 0] for c in range(C)], 1)
    want = (acc - zp * wsum[None, :, None, None]).transpose(0, 2, 3, 1).reshape(-1, C)
    np.testing.assert_array_equal(yf, want.astype(np.float32))  # exact integers
    assert yf[:, 0].max() > 255 * (k * k - 2 * k)  # the all-ones channel did reach large sums
    if k == 12:
        return
    out = np.empty(q8.buffer_size(N, Ho, Wo, C), np.uint8)
    q8.max_pool(buf, N, H, W, C, 3, 3, 2, 2, 1, 1, Ho, Wo, zp, out)
    xp = np.zeros((N, C, H + 2, W + 2), np.int64)  # u8 padding: 0 never wins a max
    xp[:, :, 1:-1, 1:-1] = q
    ref = np.max([xp[:, :, i:i + 2 * Ho:2, j:j + 2 * Wo:2] for i in range(3) for j in range(3)], axis=0)
    cp = mk.padded_channels(C)
    got = out[:N * Ho * Wo * cp].reshape(N, Ho, Wo, cp)[..., :C].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got, ref)


def test_select_refuses_unknown_or_unavailable_kernels():
    from tdsl.errors import TdslError

    with pytest.raises(TdslError, match="unknown NHWC micro-kernel"):
        mk.select("sse9")
    assert mk.select().name == [n for n in mk.available() if not n.endswith("-w16")][-1]
    assert mk.select(weights="int16").name == mk.available()[-1] and mk.select().weights == "ternary"
    assert mk.select("portable", weights="int16").name == "portable-w16"
    assert isa.summary()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", [c for c in STEMS if c[8][1] == 1])  # runs need no dilation along the width
def test_stem_on_a_padded_image_gives_the_bits_of_the_gathering_conv(kind, case):
    """The stem reading kernel rows as runs of a padded image (`quantize_nchw_padded`,
    `row_indirection`) computes what the gathering conv does, and the padded image holds the
    zero point around the quantised pixels."""
    N, C, H, W, O, (kh, kw), st, pad, dil = case
    rng = np.random.default_rng(4)
    xf = rng.standard_normal((N, C, H, W)).astype(np.float32)
    ph, pw = pad
    cp = mk.padded_channels(C)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    padded = np.empty(q8.buffer_size(N, Hp, Wp, C), np.uint8)
    q8.quantize_nchw_padded(xf, 0.03, 100, padded, ph, pw)
    plain = np.empty(q8.buffer_size(N, H, W, C), np.uint8)
    q8.quantize_nchw(xf, 0.03, 100, plain)
    img = padded[:N * Hp * Wp * cp].reshape(N, Hp, Wp, cp)
    np.testing.assert_array_equal(img[:, ph:ph + H, pw:pw + W], plain[:N * H * W * cp].reshape(N, H, W, cp))
    border = np.ones((Hp, Wp), bool)
    border[ph:ph + H, pw:pw + W] = False
    assert (img[:, border] == 100).all() and (img[:, ~border, C:] == 100).all() and (padded[-cp:] == 100).all()

    wdt = np.int16 if weights_of(kind) == "int16" else np.int8
    t = rng.integers(-1, 2, (O, C, kh, kw)).astype(wdt) * (300 if wdt == np.int16 else 1)
    Ho = (H + 2 * ph - dil[0] * (kh - 1) - 1) // st[0] + 1
    Wo = (W + 2 * pw - (kw - 1) - 1) // st[1] + 1
    P = N * Ho * Wo
    wsum = t.reshape(O, -1).sum(1).astype(np.int32)
    se = np.full(O, 0.002, np.float32)
    bias = rng.standard_normal(O).astype(np.float32)
    nblocks = -(-O // mk.NR)
    lohi = np.empty((q8.conv_tasks(P, nblocks), 2), np.float32)
    empty, nofloat = np.zeros(0, np.uint8), np.zeros((0, 0), np.float32)
    rows = np.zeros((O, kh, kw, cp), wdt)
    rows[..., :C] = t.transpose(0, 2, 3, 1)
    kp = mk.padded_channels(kh * kw * cp)
    full = np.zeros((O, kp, 1, 1), wdt)
    full[:, :kh * kw * cp, 0, 0] = rows.reshape(O, -1)
    geom = np.array([N, H, W, cp, kh, kw, *st, *pad, *dil, Ho, Wo], np.int64)
    want = np.empty(q8.buffer_size(N, Ho, Wo, O), np.uint8)
    q8.conv(kind, plain, np.zeros(0, np.int64), 1, kp // 2, mk.panels_of(kind)(full).reshape(-1), nblocks, P, O, wsum,
            100, se, bias, empty, np.float32(0), 0, 0, want, 1 / 0.05, 7, nofloat, lohi, 2, geom)
    by_rows = mk.panels_of(kind)(np.ascontiguousarray(rows.reshape(O, kh, kw * cp, 1).transpose(0, 2, 1, 3)))
    offs = q8.row_indirection(N, Hp, Wp, cp, kh, *st, dil[0], Ho, Wo)
    got = np.empty_like(want)
    q8.conv(kind, padded, offs, kh, kw * cp // 2, by_rows.reshape(-1), nblocks, P, O, wsum, 100, se, bias, empty,
            np.float32(0), 0, 0, got, 1 / 0.05, 7, nofloat, lohi, 2, NO_GEOM)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) > 10


@pytest.mark.parametrize("depthwise", [False, True])
def test_prepared_and_serial_entries_give_the_bits_of_the_plain_kernels(depthwise):
    """The entries a deployment calls (constants made once: `epilogue_terms`; small convs on the
    calling thread) compute what `conv` / `depthwise` do, with a residual and relu6."""
    N, C, H, W, O = 2, 40, 7, 6, 40
    rng = np.random.default_rng(8)
    cp = mk.padded_channels(C)
    x = rng.integers(0, 256, q8.buffer_size(N, H, W, C)).astype(np.uint8)
    res = rng.integers(0, 256, q8.buffer_size(N, H, W, O)).astype(np.uint8)
    se = rng.uniform(0.001, 0.01, O).astype(np.float32)
    bias = rng.standard_normal(O).astype(np.float32)
    nofloat = np.zeros((0, 0), np.float32)
    P = N * H * W
    offs = q8.indirection(N, H, W, cp, 3, 3, 1, 1, 1, 1, 1, 1, H, W)
    outs = []
    if depthwise:
        w = rng.integers(-1, 2, (9, C)).astype(np.int8)
        wsum = w.sum(0).astype(np.int32)
        lohi = np.empty((N * H, 2), np.float32)
        args = (x, offs, 9, C, W, w, wsum, 5, se, bias, res, np.float32(0.03), 9, 2)
        terms = q8.epilogue_terms(wsum, 5, se, bias, 1 / 0.05, 7, 2, res, np.float32(0.03), 9)
        terms = (terms[0], terms[1], *(np.float32(t) for t in terms[2:]))
        for fn, extra in ((q8.depthwise, ()), (q8.depthwise_prepared, terms), (q8.depthwise_prepared_serial, terms)):
            out = np.zeros(q8.buffer_size(N, H, W, O), np.uint8)
            fn(*args, out, 1 / 0.05, 7, nofloat, lohi, *extra)
            outs.append(out)
    else:
        t = rng.integers(-1, 2, (O, C, 3, 3)).astype(np.int8)
        wsum = t.reshape(O, -1).sum(1).astype(np.int32)
        panels = mk.k2x32_panels(t).reshape(-1)
        lohi = np.empty((q8.conv_tasks(P, 2), 2), np.float32)
        args = (1 if isa.has("avx2") else 0, x, offs, 9, cp // 2, panels, 2, P, O, wsum, 5, se, bias, res,
                np.float32(0.03), 9, 2)
        terms = q8.epilogue_terms(wsum, 5, se, bias, 1 / 0.05, 7, 2, res, np.float32(0.03), 9)
        terms = (terms[0], terms[1], *(np.float32(t) for t in terms[2:]))
        for fn, extra in ((q8.conv, ()), (q8.conv_prepared, terms), (q8.conv_prepared_serial, terms)):
            out = np.zeros(q8.buffer_size(N, H, W, O), np.uint8)
            fn(*args, out, 1 / 0.05, 7, nofloat, lohi, 2, NO_GEOM, *extra)
            outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    assert len(np.unique(outs[0][:P * cp])) > 20


@pytest.mark.parametrize("N, HW, C", [(1, 49, 1280), (3, 16, 300), (2, 9, 30)])  # 5 tasks; a partial one; padded rows
def test_global_avg_pool_is_the_exact_mean(N, HW, C):
    rng = np.random.default_rng(N)
    cp = mk.padded_channels(C)
    q = rng.integers(0, 256, (N, HW, C)).astype(np.uint8)
    buf = np.full(q8.buffer_size(N, HW, 1, C), 255, np.uint8)  # padding bytes that must not count
    buf[:N * HW * cp].reshape(N, HW, cp)[..., :C] = q
    y = np.empty((N, C, 1, 1), np.float32)
    q8.global_avg_pool(buf, N, HW, C, 0.05, 7, y)
    want = ((q.astype(np.int64).sum(axis=1) / HW - 7) * 0.05).astype(np.float32)
    np.testing.assert_array_equal(y.reshape(N, C), want)
