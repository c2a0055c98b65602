"""The AMX conv driver (tdsl.runtime.amx_conv): its gathering, padding, panel addressing, task
split and epilogues give the AVX2 / portable driver's bits. On CPUs without AMX the block it
calls is `amx.emulated_block` (the tile product in scalar code, itself checked against numpy
here); where the CPU has AMX-INT8 the same cases run on the tiles."""
from __future__ import annotations

import numpy as np
import pytest

from tdsl.runtime import activations, amx, amx_conv, isa
from tdsl.runtime import microkernels as mk
from tdsl.runtime import nhwc_int8 as q8

HAS_AMX = isa.has("amx_int8") and isa.amx_permission()
NO_GEOM = np.zeros(14, np.int64)
EMPTY_U8 = np.zeros(0, np.uint8)
NO_FLOAT = np.zeros((0, 0), np.float32)

BLOCKS = [pytest.param("emulated", id="emulated"),
          pytest.param("amx", id="amx", marks=pytest.mark.skipif(
              not HAS_AMX, reason="this CPU has no AMX-INT8 (amx_tile/amx_int8 in /proc/cpuinfo) or Linux refused "
                                  "the tile data: the driver runs on the emulated block here"))]

# (N, C, H, W, O, (kh, kw), stride, padding, dilation)
CASES = [
    (1, 3, 9, 8, 5, (3, 3), (1, 1), (1, 1), (1, 1)),       # Kp 64 from 9 taps of 4 bytes, O below a block
    (2, 6, 7, 9, 40, (3, 2), (2, 1), (1, 0), (1, 1)),      # 2 images, strided: a partial last tile
    (1, 5, 11, 10, 33, (3, 3), (1, 2), (2, 3), (2, 3)),    # dilated, padded
    (1, 130, 6, 5, 64, (1, 1), (1, 1), (0, 0), (1, 1)),    # 1x1, 130 channels: Kp 192, 2 blocks
    (1, 64, 10, 9, 160, (3, 3), (1, 1), (1, 1), (1, 1)),   # 5 blocks, 3 full tiles: Kp 576
    (3, 24, 8, 8, 144, (1, 1), (1, 1), (0, 0), (1, 1)),    # MobileNet's 24 -> 144 expansion
]


def block_of(name):
    return amx.emulated_block().address if name == "emulated" else amx_conv.block_address()


def setup(case, zp, seed=0):
    N, C, H, W, O, (kh, kw), st, pad, dil = case
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (N, C, H, W)).astype(np.uint8)
    cp = mk.padded_channels(C)
    buf = np.full(q8.buffer_size(N, H, W, C), zp, np.uint8)
    buf[:N * H * W * cp].reshape(N, H, W, cp)[..., :C] = q.transpose(0, 2, 3, 1)
    t = rng.integers(-1, 2, (O, C, kh, kw)).astype(np.int8)
    Ho = (H + 2 * pad[0] - dil[0] * (kh - 1) - 1) // st[0] + 1
    Wo = (W + 2 * pad[1] - dil[1] * (kw - 1) - 1) // st[1] + 1
    offs = q8.indirection(N, H, W, cp, kh, kw, *st, *pad, *dil, Ho, Wo)
    wsum = t.reshape(O, -1).sum(axis=1).astype(np.int32)
    se = rng.uniform(0.001, 0.01, O).astype(np.float32)
    bias = rng.standard_normal(O).astype(np.float32)
    res = rng.integers(0, 256, q8.buffer_size(N, Ho, Wo, O)).astype(np.uint8)
    return dict(q=q, buf=buf, t=t, offs=offs, wsum=wsum, se=se, bias=bias, res=res, cp=cp, P=N * Ho * Wo,
                shape=(N, Ho, Wo))


def avx_driver(s, case, zp, static, act, residual, workers=2):
    """The conv by the table's fastest conv micro-kernel (`nhwc_int8.conv`)."""
    O, (kh, kw) = case[4], case[5]
    P, kind = s["P"], mk.select().code  # on a VNNI CPU the k4x32 row: its panels, not k2x32's
    nblocks = -(-O // mk.NR)
    lohi = np.empty((q8.conv_tasks(P, nblocks), 2), np.float32)
    res, rs, rzp = (s["res"], np.float32(0.02), 5) if residual else (EMPTY_U8, np.float32(0), 0)
    args = (kind, s["buf"], s["offs"], kh * kw, s["cp"] // 2, mk.panels_of(kind)(s["t"]).reshape(-1), nblocks, P, O,
            s["wsum"], zp, s["se"], s["bias"], res, rs, rzp, act)
    if static:
        out = np.empty(q8.buffer_size(*s["shape"], O), np.uint8)
        q8.conv(*args, out, 1 / 0.05, 7, NO_FLOAT, lohi, workers, NO_GEOM)
        return out, lohi
    got = np.empty((P, O), np.float32)
    q8.conv(*args, EMPTY_U8, 1.0, 0, got, lohi, workers, NO_GEOM)
    return got, lohi


def amx_driver(block, s, case, zp, static, act, residual, workers=2):
    O, (kh, kw) = case[4], case[5]
    P, cp = s["P"], s["cp"]
    kp = amx_conv.k_bytes(kh * kw, cp)
    lohi = np.empty((amx_conv.tasks(P, O, workers), 2), np.float32)
    res, rs, rzp = (s["res"], np.float32(0.02), 5) if residual else (EMPTY_U8, np.float32(0), 0)
    args = (block, amx.tile_config(), s["buf"], s["offs"], kh * kw, cp, kp, amx_conv.panels(s["t"], cp), P, O,
            s["wsum"], zp, s["se"], s["bias"], res, rs, rzp, act)
    if static:
        out = np.empty(q8.buffer_size(*s["shape"], O), np.uint8)
        amx_conv.conv(*args, out, 1 / 0.05, 7, NO_FLOAT, lohi, workers)
        return out, lohi
    got = np.empty((P, O), np.float32)
    amx_conv.conv(*args, EMPTY_U8, 1.0, 0, got, lohi, workers)
    return got, lohi


def test_the_emulated_block_is_the_tile_product():
    """C = A . B over Kp bytes from the vnni4x16 panels, as `tdpbusd` computes it."""
    import ctypes

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (32, 192)).astype(np.uint8)
    w = rng.integers(-1, 2, (32, 192)).astype(np.int8)
    w[0, :] = -1  # the most negative sum a row can reach
    a[0, :] = 255
    p = amx.vnni4x16_panels(w)
    c = np.empty((32, 32), np.int32)
    fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p, ctypes.c_int64] + [ctypes.c_void_p] * 2 +
                          [ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p])(
        amx.emulated_block().address)
    fn(a.ctypes.data, 192, p[0].ctypes.data, p[1].ctypes.data, 3, c.ctypes.data, 128, amx.tile_config().ctypes.data)
    np.testing.assert_array_equal(c, a.astype(np.int64) @ w.T.astype(np.int64))
    assert c[0, 0] == -255 * 192


def test_panels_follow_the_gathered_row_order():
    """B row k of output o holds weight (tap k // cp, channel k % cp): tap-major, zero padding
    past the channels and past ntaps * cp."""
    rng = np.random.default_rng(4)
    t = rng.integers(-1, 2, (40, 5, 3, 3)).astype(np.int8)
    cp = mk.padded_channels(5)
    p = amx_conv.panels(t, cp)
    kp = amx_conv.k_bytes(9, cp)
    assert kp % 64 == 0 and 9 * cp <= kp < 9 * cp + 64 and p.shape == (4, kp // 4, 64)
    dense = p.reshape(4, kp // 4, 16, 4).transpose(0, 2, 1, 3).reshape(64, kp)
    want = np.zeros((64, kp), np.int8)
    want[:40, :9 * cp] = np.pad(t.transpose(0, 2, 3, 1), ((0, 0), (0, 0), (0, 0), (0, cp - 5))).reshape(40, -1)
    np.testing.assert_array_equal(dense, want)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("case", CASES)
def test_dynamic_outputs_are_the_avx_drivers_bits(block, case):
    s = setup(case, zp=128)
    got, lohi = amx_driver(block_of(block), s, case, 128, static=False, act=0, residual=False)
    want, _ = avx_driver(s, case, 128, static=False, act=0, residual=False)
    np.testing.assert_array_equal(got, want)
    assert lohi[:, 0].min() == got.min() and lohi[:, 1].max() == got.max()


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("act, residual", [(activations.NONE, False), (activations.RELU, True),
                                           (activations.RELU6, False), (activations.SILU, True)])
def test_static_outputs_are_the_avx_drivers_bits(block, case, act, residual):
    s = setup(case, zp=9, seed=2)
    got, _ = amx_driver(block_of(block), s, case, 9, static=True, act=act, residual=residual)
    want, _ = avx_driver(s, case, 9, static=True, act=act, residual=residual)
    np.testing.assert_array_equal(got, want)  # the channel padding and the zero row included


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_the_split_does_not_change_the_bits(workers):
    case = CASES[4]
    s = setup(case, zp=77, seed=5)
    base, _ = amx_driver(block_of("emulated"), s, case, 77, static=True, act=activations.RELU, residual=False, workers=2)
    got, _ = amx_driver(block_of("emulated"), s, case, 77, static=True, act=activations.RELU, residual=False, workers=workers)
    np.testing.assert_array_equal(got, base)
    assert amx_conv.tasks(s["P"], case[4], 8) > amx_conv.tasks(s["P"], case[4], 1)  # channel groups when few tiles
