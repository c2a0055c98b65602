"""Micro-kernels of the NHWC int8 runtime, one table row per (dtype, ISA).

A micro-kernel computes one tile of int32 accumulators, `mr` output pixels x `nr` output
channels, of u8 activations (NHWC rows found through an indirection buffer: no im2col copy)
times ternary weights held as s8 in a panel layout made once per deployment. Drivers
(`tdsl.runtime.nhwc_int8`) own the loops around it, the epilogue and the threads; they call
`tile(kind, ...)`, which switches on the row's `code` (a compile-time constant per row, so the
branches of ISAs this CPU lacks are pruned and never compiled).

Adding an ISA is one row of `TABLE` plus its tile function (and a panel builder if its
layout is new).

Panel layout "k2x32" (portable, avx2): output channels in blocks of 32 (zero weights pad the
last block); per block, per tap t (kernel position, in (kh, kw) order), per pair j of input
channels, 64 bytes: byte 2*o + kk holds the weight of channel o of the block at input channel
2j + kk. One AVX2 `vpmaddubsw` of 32 such bytes with the two activation bytes of pair j
broadcast gives, for 16 channels, x[2j]*w[2j] + x[2j+1]*w[2j+1] in i16: with ternary weights a
pair sum is at most 2*255 = 510, so 64 pairs add up in i16 without overflow (int8 weights
could not do that: they saturate `vpmaddubsw`) before they are widened to i32.

Panel layout "k4x32" (the VNNI rows): the same blocks and taps, per quad q of input channels
128 bytes: byte 4*o + kk holds channel o's weight at input channel 4q + kk, so the 64 bytes of
channels 0-15 (one zmm, or two ymm) are what one `vpdpbusd` takes against the quad's four
activation bytes broadcast as a dword; it sums u8 x s8 products straight into i32, so no i16
stage and no widening. A block's bytes and a tap's stride are those of k2x32 (cp x 32 a tap).

The indirection buffer `offs` (int64) holds, for output pixel p and tap t, the byte offset
offs[p*ntaps + t] of the input row (`cp` channels) that tap reads, or of a row filled with the
input's zero point where the tap falls in the padding.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from tdsl.runtime import isa

NR = 32
"""Output channels per micro-kernel call (one panel block)."""
PAIRS_PER_WIDEN = 64
"""k pairs summed in i16 before widening: 64 * 510 = 32640 < 32767."""


@dataclass(frozen=True)
class MicroKernel:
    """One table row: what a micro-kernel computes and where it runs."""

    name: str
    dtype: str
    """What it multiplies and accumulates in."""
    isa: str | None
    """The ISA it needs (a key of `tdsl.runtime.isa.FEATURES`), None for plain Numba."""
    mr: int
    """Output pixels per call."""
    nr: int
    """Output channels per call."""
    panel: str
    """The weight panel layout it reads."""
    code: int
    """The constant `tile` switches on."""
    drivers: tuple[str, ...] = ("conv", "gemm")
    """The drivers that can run it: "conv" (`nhwc_int8.conv`, through `tile`) and "gemm"."""
    weights: str = "ternary"
    """The weights it multiplies: "ternary" (s8 trits) or "int16" (integer weights of a layer the
    precision policy kept at fp16 / fp32 / int8, per output channel, `int16_weights`)."""

    def available(self) -> bool:
        if self.isa is None or isa.emulating(self.isa):  # emulated: the tests' rows without the ISA
            return True
        if self.isa == "amx_int8":
            return isa.has(self.isa) and isa.amx_permission()
        return isa.has(self.isa)


MR = 4
"""Output pixels per call of the k2x32 kernels (4 x 2 i16 accumulators + 2 weight vectors +
1 broadcast fit AVX2's 16 ymm registers with room for the address arithmetic)."""

TABLE: tuple[MicroKernel, ...] = (
    MicroKernel("portable", "u8 x ternary s8 -> i32", None, MR, NR, "k2x32", 0),
    MicroKernel("avx2", "u8 x ternary s8 -> i16 pairs -> i32", "avx2", MR, NR, "k2x32", 1),
    MicroKernel("avx-vnni", "u8 x ternary s8 -> i32 (vpdpbusd ymm)", "avx_vnni", MR, NR, "k4x32", 6, ("conv",)),
    MicroKernel("avx512-vnni", "u8 x ternary s8 -> i32 (vpdpbusd zmm)", "avx512_vnni", MR, NR, "k4x32", 5,
                ("conv",)),
    MicroKernel("amx", "u8 x ternary s8 -> i32 tiles", "amx_int8", 32, 32, "vnni4x16", 2, ("gemm", "conv")),
    MicroKernel("portable-w16", "u8 x s16 -> i32", None, MR, NR, "k2x32", 3, ("conv",), "int16"),
    MicroKernel("avx2-w16", "u8 x s16 -> i32 (vpmaddwd)", "avx2", MR, NR, "k2x32", 4, ("conv",), "int16"),
    MicroKernel("avx-vnni-w16", "u8 x s16 -> i32 (vpdpwssd ymm)", "avx_vnni", MR, NR, "k2x32", 8, ("conv",), "int16"),
    MicroKernel("avx512-vnni-w16", "u8 x s16 -> i32 (vpdpwssd zmm)", "avx512_vnni", MR, NR, "k2x32", 7, ("conv",),
                "int16"),
)
"""Every micro-kernel, slowest first; `select` takes the last available one its driver can run.
The k2x32 rows run in `nhwc_int8.conv` (through `tile`); the AMX row (`tdsl.runtime.amx`) in its
own drivers, `amx.gemm` and `amx_conv.conv` (32-pixel A panels gathered through the same
indirection), and for the convs it does not take (depthwise, the few-channel stem, kept
layers' int16 weights) the program runs `k2x32_row`'s kernel."""

_HAS_AVX2 = isa.has("avx2")
"""Read once at import: `tile` sees it as a constant and drops the AVX2 branch where the CPU
lacks it (LLVM aborts the process on instructions it cannot select). The hardware's answer,
never `isa.emulate`'s: an emulated row runs its generic-IR tile."""
_HAS_AVX_VNNI = isa.has("avx_vnni")
_HAS_AVX512_VNNI = isa.has("avx512_vnni")


def k2x32_row(weights: str = "ternary") -> MicroKernel:
    """The fastest available row `nhwc_int8.conv` runs for `weights` (its tiles: k2x32 or k4x32
    panels): what a program whose micro-kernel has its own driver (AMX) runs the other convs on."""
    return [row for row in TABLE if row.available() and row.panel in PANELS and row.weights == weights][-1]


def int16_row(row: MicroKernel) -> MicroKernel:
    """The row of kept layers (int16 weights) beside ternary row `row`: its ISA's "-w16" row
    where there is one (so forcing "portable" forces both), else the fastest available."""
    names = [r.name for r in TABLE]
    return by_name(row.name + "-w16") if row.name + "-w16" in names else k2x32_row("int16")


def panels_of(code: int) -> Callable[[np.ndarray], np.ndarray]:
    """The panel builder of the row with `code`."""
    return PANELS[next(row.panel for row in TABLE if row.code == code)]


def by_name(name: str) -> MicroKernel:
    for row in TABLE:
        if row.name == name:
            return row
    raise KeyError(name)


def available() -> list[str]:
    """Names of the micro-kernels this process can run."""
    return [row.name for row in TABLE if row.available()]


def select(name: str | None = None, driver: str = "conv", weights: str = "ternary") -> MicroKernel:
    """The row for `name` (a TdslError if unknown or not runnable here), or the fastest one
    `driver` can run for `weights` ("ternary" or "int16")."""
    from tdsl.errors import TdslError

    if name is None or name == "auto":
        return [row for row in TABLE if row.available() and driver in row.drivers and row.weights == weights][-1]
    if weights == "int16" and not name.endswith("-w16"):
        name += "-w16"  # the same ISA's row for integer weights
    names = [row.name for row in TABLE]
    if name not in names:
        raise TdslError(f"unknown NHWC micro-kernel {name!r}: valid are " + ", ".join(repr(n) for n in names))
    row = by_name(name)
    if driver not in row.drivers:
        raise TdslError(f"micro-kernel {name!r} has no {driver} driver yet (it runs: {', '.join(row.drivers)})")
    if not row.available():
        raise TdslError(f"micro-kernel {name!r} needs {row.isa}, which this CPU (or Numba's target CPU) lacks; "
                        f"available here: {', '.join(available())}")
    return row


# ---------------------------------------------------------------------------------------
# Panels


def _kgroup_panels(trits: np.ndarray, k: int) -> np.ndarray:
    """[ceil(O/32), kh*kw, cp/k, 32*k]: per block, tap and group of k input channels, byte
    k*o + kk = the weight of channel o of the block at input channel k*group + kk."""
    O, C, kh, kw = trits.shape
    cp = padded_channels(C)
    nb = -(-O // NR)
    w = np.zeros((nb * NR, cp, kh, kw), trits.dtype)
    w[:O, :C] = trits
    # [block, o, group, kk, i, j] -> [block, i, j, group, o, kk]
    w6 = w.reshape(nb, NR, cp // k, k, kh, kw).transpose(0, 4, 5, 2, 1, 3)
    return np.ascontiguousarray(w6.reshape(nb, kh * kw, cp // k, k * NR))


def k2x32_panels(trits: np.ndarray) -> np.ndarray:
    """The k2x32 panels (module docstring) of integer weights [O, Cp/2*2, kh, kw].

    trits: int8 [O, C, kh, kw] in {-1, 0, 1} (or int16 weights: the same layout of 2-byte
    elements, for the "-w16" kernels); C is padded to the even `cp` the activations carry (see
    `padded_channels`). Returns [ceil(O/32), kh*kw, cp/2, 64] of trits' dtype."""
    return _kgroup_panels(trits, 2)


def k4x32_panels(trits: np.ndarray) -> np.ndarray:
    """The k4x32 panels (module docstring) of integer weights [O, C, kh, kw]:
    [ceil(O/32), kh*kw, cp/4, 128] of trits' dtype."""
    return _kgroup_panels(trits, 4)


PANELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"k2x32": k2x32_panels, "k4x32": k4x32_panels}
"""The panel builders of the layouts `nhwc_int8.conv`'s tiles read."""


def padded_channels(c: int) -> int:
    """Channels of an NHWC u8 row: c rounded up to a multiple of 4 (whole k pairs, aligned rows)."""
    return -(-c // 4) * 4


# ---------------------------------------------------------------------------------------
# Tiles. Arguments: w (int8 panels, flat), woff (byte offset of the block), x (uint8 input,
# flat), offs (int64 indirection), ooff (index of the tile's first pixel's first tap), ntaps,
# npairs (cp/2), out (int32, flat), oidx, ostride: acc[m, o] goes to out[oidx + m*ostride + o].


def _tile_bases(context, builder, signature, args):  # noqa: ANN001, ANN202
    """(index type, weight block pointer, input base, indirection base) of a tile's arguments."""
    wv, woffv, xv, offsv = args[:4]
    wbase = builder.gep(isa.data_ptr(context, builder, signature.args[0], wv), [woffv])
    xbase = isa.data_ptr(context, builder, signature.args[2], xv)
    return woffv.type, wbase, xbase, isa.data_ptr(context, builder, signature.args[3], offsv, isa.I64)


def _pixel_rows(builder, xbase, obase, ooff, ntaps, t, pixels) -> list:  # noqa: ANN001
    """Pointers to the input rows tap t of each tile pixel m in `pixels` reads (offs[ooff + m*ntaps + t])."""
    ity = ooff.type
    return [builder.gep(xbase, [builder.load(builder.gep(obase, [builder.add(ooff, builder.add(
        builder.mul(ntaps, ir.Constant(ity, m)), t))]))]) for m in pixels]


def _make_tile_avx2(mr: int, halves: int = 2):
    """The AVX2 k2x32 tile: mr pixels x 16 * halves channels (the first `halves` 16-channel
    halves of a 32-channel block), i16 pair sums widened every 64 pairs. One half serves a
    block of at most 16 channels (a conv of 16 outputs, the last block of 144) at about half
    the work: each weight vector it loads still pairs with mr broadcasts."""

    @intrinsic
    def tile(typingctx, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
        sig = types.none(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)

        def codegen(context, builder, signature, args):
            ooffv, ntv, npv, outv, oidxv, osv = args[4:]
            ity, wbase, xbase, obase = _tile_bases(context, builder, signature, args)
            zero16 = ir.Constant(isa.V16I16, None)
            a16 = [[cgutils.alloca_once_value(builder, zero16) for _ in range(halves)] for _ in range(mr)]
            a32 = [[cgutils.alloca_once_value(builder, ir.Constant(isa.V8I32, None)) for _ in range(2 * halves)]
                   for _ in range(mr)]
            tap_bytes = builder.mul(npv, ir.Constant(ity, 2 * NR))
            # taps per widening: as many whole taps as fit 64 pairs (C = 64: two taps), else one
            # tap widened every 64 pairs inside it
            tpw = builder.select(builder.icmp_signed(">", npv, ir.Constant(ity, PAIRS_PER_WIDEN)), ir.Constant(ity, 1),
                                 builder.udiv(ir.Constant(ity, PAIRS_PER_WIDEN), npv))
            big = builder.icmp_signed(">", npv, ir.Constant(ity, PAIRS_PER_WIDEN))

            def widen():
                for m in range(mr):
                    for h in range(halves):
                        lo, hi = isa.widen_i16(builder, builder.load(a16[m][h]))
                        builder.store(builder.add(builder.load(a32[m][2 * h]), lo), a32[m][2 * h])
                        builder.store(builder.add(builder.load(a32[m][2 * h + 1]), hi), a32[m][2 * h + 1])
                        builder.store(zero16, a16[m][h])

            def widen_inside_tap():
                with builder.if_then(big):
                    widen()

            def tap_rows(t):
                """The tile's mr input rows of tap t and the tap's weights."""
                return _pixel_rows(builder, xbase, obase, ooffv, ntv, t, range(mr)), \
                    builder.gep(wbase, [builder.mul(t, tap_bytes)])

            def chunk(j, rows, wtap):
                wj = builder.gep(wtap, [builder.mul(j, ir.Constant(ity, 2 * NR))])
                wvec = [builder.load(builder.bitcast(builder.gep(wj, [ir.Constant(ity, 32 * h)]),
                                                     isa.V32I8.as_pointer()), align=1) for h in range(halves)]
                j2 = builder.mul(j, ir.Constant(ity, 2))
                for m in range(mr):
                    b = isa.broadcast_i16(builder, builder.gep(rows[m], [j2]))
                    for h in range(halves):
                        builder.store(builder.add(builder.load(a16[m][h]), isa.pmaddubsw(builder, b, wvec[h])), a16[m][h])

            short = builder.icmp_signed("<=", builder.mul(ntv, npv), ir.Constant(ity, PAIRS_PER_WIDEN))
            with builder.if_else(short) as (then, otherwise):
                with then:  # every pair sums in i16 (a 1x1 conv of up to 128 channels): widened once, stored
                    with cgutils.for_range(builder, ntv) as tap:
                        rows, wtap = tap_rows(tap.index)
                        with cgutils.for_range(builder, npv) as pair:
                            chunk(pair.index, rows, wtap)
                    wide = [[v for h in range(halves) for v in isa.widen_i16(builder, builder.load(a16[m][h]))]
                            for m in range(mr)]
                    isa.store_values(context, builder, signature.args[7], outv, oidxv, osv, wide)
                with otherwise:
                    ngroups = builder.udiv(builder.add(ntv, builder.sub(tpw, ir.Constant(ity, 1))), tpw)
                    with cgutils.for_range(builder, ngroups) as group:
                        t0 = builder.mul(group.index, tpw)
                        left = builder.sub(ntv, t0)
                        count = builder.select(builder.icmp_signed(">", left, tpw), tpw, left)
                        with cgutils.for_range(builder, count) as tap:
                            t = builder.add(t0, tap.index)
                            rows, wtap = tap_rows(t)
                            isa.for_groups(builder, npv, PAIRS_PER_WIDEN,
                                           lambda j, rows=rows, wtap=wtap: chunk(j, rows, wtap), widen_inside_tap)
                        widen()
                    isa.store_tile(context, builder, signature.args[7], outv, oidxv, osv, a32)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _make_tile_vnni(mr: int, halves: int = 2, bits: int = 512, emulated: bool = False, w16: bool = False):
    """The VNNI k4x32 tile: mr pixels x 16 * halves channels, per quad of input channels one
    `vpdpbusd` per pixel and 16 channels (two with ymm) of the quad's dword broadcast against
    the weight vectors, accumulating in i32. 512 bits: the avx512-vnni row, 8 zmm accumulators
    at mr = 4; 256: the avx-vnni row (AVX-VNNI's VEX form, or AVX512-VL), 16 ymm.

    w16: the "-vnni-w16" rows' tile of int16 weights in k2x32 panels: per pair of input channels,
    the two u8 zero-extended to i16 and broadcast as a dword, one `vpdpwssd` (two s16 products
    into i32) per pixel against the pair's 128 bytes of weights: the same 128 bytes a group
    as k4x32's quads, so the same loop with a pair where that has a quad."""
    lanes = bits // 32
    nvec = halves * 16 // lanes
    vi32, vi8 = ir.VectorType(isa.I32, lanes), ir.VectorType(isa.I8, 4 * lanes)
    v2i8, v2i16 = ir.VectorType(isa.I8, 2), ir.VectorType(isa.I16, 2)

    @intrinsic
    def tile(typingctx, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
        if (w.dtype == types.int16) != w16:
            return None
        sig = types.none(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)

        def codegen(context, builder, signature, args):
            ooffv, ntv, npv, outv, oidxv, osv = args[4:]
            ity, wbase, xbase, obase = _tile_bases(context, builder, signature, args)
            if w16:  # woff counts int16 elements: the block's bytes start at twice it
                wbase = builder.gep(isa.data_ptr(context, builder, signature.args[0], args[0]),
                                    [builder.mul(args[1], ir.Constant(ity, 2))])
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(vi32, None)) for _ in range(nvec)]
                    for _ in range(mr)]
            tap_bytes = builder.mul(npv, ir.Constant(ity, (4 if w16 else 2) * NR))
            ngroups = npv if w16 else builder.udiv(npv, ir.Constant(ity, 2))
            group_bytes = 2 if w16 else 4  # activation bytes a group
            undef = ir.Constant(vi32, ir.Undefined)
            with cgutils.for_range(builder, ntv) as tap:
                t = tap.index
                rows = _pixel_rows(builder, xbase, obase, ooffv, ntv, t, range(mr))
                wtap = builder.gep(wbase, [builder.mul(t, tap_bytes)])
                with cgutils.for_range(builder, ngroups) as group:
                    q = group.index
                    wq = builder.gep(wtap, [builder.mul(q, ir.Constant(ity, 4 * NR))])
                    wvec = [builder.load(builder.bitcast(builder.gep(wq, [ir.Constant(ity, 4 * lanes * v)]),
                                                         vi8.as_pointer()), align=1) for v in range(nvec)]
                    qb = builder.mul(q, ir.Constant(ity, group_bytes))
                    for m in range(mr):
                        src = builder.gep(rows[m], [qb])
                        if w16:
                            pair8 = builder.load(builder.bitcast(src, v2i8.as_pointer()), align=1)
                            word = builder.bitcast(builder.zext(pair8, v2i16), isa.I32)
                        else:
                            word = builder.load(builder.bitcast(src, isa.I32.as_pointer()), align=1)
                        splat = builder.shuffle_vector(builder.insert_element(undef, word, ir.Constant(isa.I32, 0)),
                                                       undef, ir.Constant(vi32, [0] * lanes))
                        b = builder.bitcast(splat, vi8)
                        dp = isa.dpwssd if w16 else isa.dpbusd
                        for v in range(nvec):
                            builder.store(dp(builder, builder.load(accs[m][v]), b, wvec[v], emulated), accs[m][v])
            isa.store_tile(context, builder, signature.args[7], outv, oidxv, osv, accs)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _make_tile_avx2_w16(mr: int):
    """The AVX2 tile of int16 weights: mr pixels x 32 channels of i32, `vpmaddwd` of the u8 pair
    (zero-extended to two i16, broadcast) by the pair's 16 weights of 8 channels. No i16 stage,
    so no widening; two pixels a pass (8 accumulators + 4 weight vectors fit the 16 ymm)."""

    @intrinsic
    def tile(typingctx, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
        if w.dtype != types.int16:
            return None
        sig = types.none(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)

        def codegen(context, builder, signature, args):
            wv, woffv, xv, offsv, ooffv, ntv, npv, outv, oidxv, osv = args
            ity = woffv.type
            v16i16p = isa.V16I16.as_pointer()
            wbase = builder.gep(isa.data_ptr(context, builder, signature.args[0], wv, isa.I16), [woffv])
            xbase = isa.data_ptr(context, builder, signature.args[2], xv)
            obase = isa.data_ptr(context, builder, signature.args[3], offsv, isa.I64)
            madd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(isa.V8I32, [isa.V16I16, isa.V16I16]), "llvm.x86.avx2.pmadd.wd")
            v2i8, v2i16 = ir.VectorType(isa.I8, 2), ir.VectorType(isa.I16, 2)
            a32 = [[cgutils.alloca_once_value(builder, ir.Constant(isa.V8I32, None)) for _ in range(4)]
                   for _ in range(mr)]
            tap_elems = builder.mul(npv, ir.Constant(ity, 2 * NR))
            for m0 in range(0, mr, 2):
                pixels = range(m0, min(mr, m0 + 2))
                with cgutils.for_range(builder, ntv) as tap:
                    t = tap.index
                    rows = _pixel_rows(builder, xbase, obase, ooffv, ntv, t, pixels)
                    wtap = builder.gep(wbase, [builder.mul(t, tap_elems)])
                    with cgutils.for_range(builder, npv) as pair:
                        j = pair.index
                        wj = builder.gep(wtap, [builder.mul(j, ir.Constant(ity, 2 * NR))])
                        wvec = [builder.load(builder.bitcast(builder.gep(wj, [ir.Constant(ity, 16 * h)]), v16i16p),
                                             align=2) for h in range(4)]
                        j2 = builder.mul(j, ir.Constant(ity, 2))
                        for k, m in enumerate(pixels):
                            pair8 = builder.load(builder.bitcast(builder.gep(rows[k], [j2]), v2i8.as_pointer()), align=1)
                            word = builder.bitcast(builder.zext(pair8, v2i16), isa.I32)
                            undef = ir.Constant(isa.V8I32, ir.Undefined)
                            bc = builder.shuffle_vector(builder.insert_element(undef, word, ir.Constant(isa.I32, 0)),
                                                        undef, ir.Constant(isa.V8I32, [0] * 8))
                            b16 = builder.bitcast(bc, isa.V16I16)
                            for h in range(4):
                                acc = builder.add(builder.load(a32[m][h]), builder.call(madd, [b16, wvec[h]]))
                                builder.store(acc, a32[m][h])
            isa.store_tile(context, builder, signature.args[7], outv, oidxv, osv, a32)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def int16_levels(k: int) -> int:
    """The largest |q| of int16 weights whose sums of k products with u8 stay inside int32."""
    return min(32767, (2**31 - 1) // (255 * max(k, 1)))


def int16_weights(weight: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(q int16 [O, ...], scale float32 [O]): weight ~= q * scale per output channel, for the
    "-w16" kernels, with |q| at most what keeps a sum of k products u8 x q inside int32
    (32767 for k <= 257, e.g. a 7x7 stem of 3 channels; fewer bits for longer sums). The
    rounding error is at most scale / 2 = max|w[o]| / (2 * qmax): below float16's own for
    every weight above max|w[o]| / 32 when qmax = 32767."""
    qmax = int16_levels(k)
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
    top = np.abs(flat).max(axis=1)
    scale = np.where(top > 0, top / qmax, 1.0)
    q = np.clip(np.rint(flat / scale[:, None]), -qmax, qmax).astype(np.int16)
    return q.reshape(weight.shape), scale.astype(np.float32)


_tile_avx2 = _make_tile_avx2(MR)
_tile_avx2_half = _make_tile_avx2(MR, 1)
_tile_avx2_w16 = _make_tile_avx2_w16(MR)
_tile_avx512_vnni = _make_tile_vnni(MR)
_tile_avx512_vnni_half = _make_tile_vnni(MR, 1)
_tile_avx_vnni = _make_tile_vnni(MR, bits=256)
_tile_avx_vnni_half = _make_tile_vnni(MR, 1, bits=256)
_tile_vnni_emulated = _make_tile_vnni(MR, emulated=True)
"""The VNNI rows' tile where the CPU lacks the instruction (`isa.emulate`, direct calls)."""
_tile_vnni_emulated_half = _make_tile_vnni(MR, 1, emulated=True)
_tile_avx512_vnni8 = _make_tile_vnni(2 * MR)
"""The avx512-vnni row's `tile_pair`: 8 pixels x 32 channels, 16 zmm accumulators (of 32 registers):
469 against 401 GMAC/s a Zen 5 thread for two 4-pixel tiles at 64 channels x 9 taps."""
_tile_vnni8_emulated = _make_tile_vnni(2 * MR, emulated=True)
_tile_avx512_vnni_w16 = _make_tile_vnni(MR, w16=True)
_tile_avx_vnni_w16 = _make_tile_vnni(MR, bits=256, w16=True)
_tile_vnni_w16_emulated = _make_tile_vnni(MR, emulated=True, w16=True)


@njit(cache=True, inline="always")
def _tile_portable(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
    """The same integers as the AVX2 tile, in plain Numba, summed in `out` itself: a local
    array here (inlined into `tile`'s switch) cost every tile call ~45 ns, taken or not, which
    was most of a 1x1 conv of 16 channels on the VNNI rows."""
    for m in range(MR):
        for o in range(NR):
            out[oidx + m * ostride + o] = 0
        for t in range(ntaps):
            row = offs[ooff + m * ntaps + t]
            wt = woff + t * npairs * 2 * NR
            for j in range(npairs):
                x0 = np.int32(x[row + 2 * j])
                x1 = np.int32(x[row + 2 * j + 1])
                wj = wt + j * 2 * NR
                for o in range(NR):
                    out[oidx + m * ostride + o] += x0 * np.int32(w[wj + 2 * o]) + x1 * np.int32(w[wj + 2 * o + 1])


@njit(cache=True, inline="always")
def tile(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
    """MR x NR accumulators of the micro-kernel with code `kind` (a TABLE row's `code`)."""
    if kind == 1 and _HAS_AVX2:  # a constant: pruned where the CPU lacks AVX2
        _tile_avx2(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    elif kind == 5 and _HAS_AVX512_VNNI:
        _tile_avx512_vnni(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    elif kind == 6 and _HAS_AVX_VNNI:
        _tile_avx_vnni(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    elif kind == 5 or kind == 6:  # a k4x32 row on a CPU without it: the same integers in generic IR
        _tile_vnni_emulated(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    else:
        _tile_portable(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)


@njit(cache=True, inline="always")
def tile_half(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
    """`tile` for a block whose channels past the 16th are padding: at least channels 0-15 of
    each row are written (32 where the row has no 16-channel tile)."""
    if kind == 1 and _HAS_AVX2:
        _tile_avx2_half(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    elif kind == 5 and _HAS_AVX512_VNNI:
        _tile_avx512_vnni_half(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    elif kind == 6 and _HAS_AVX_VNNI:
        _tile_avx_vnni_half(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    elif kind == 5 or kind == 6:
        _tile_vnni_emulated_half(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    else:
        tile(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)


PAIR = 2 * MR
"""Output pixels of `tile_pair`."""
PAIR_MIN_PAIRS = 4
"""Input-channel pairs (over all taps) from which `tile_pair` takes the 8-pixel tile: every block
of the avx512-vnni row but a single tap of 4 channels. On a Zen 5 thread the 3x3 convs of 64
channels gained 11-18 % and the 1x1 expansions of 16-32 channels ~10 % (16 -> 96 at 112^2
0.167-0.173 -> 0.147-0.163 ms), in a driver loop of constant step (a variable step had cost the
small convs ~20 %)."""


@njit(cache=True, inline="always")
def takes_pair(kind, ntaps, npairs, nch):
    """Whether a driver runs this block's pixels PAIR at a time (`any_tile_pair`): the avx512-vnni
    row's ternary blocks of more than 16 channels with at least PAIR_MIN_PAIRS pairs."""
    return kind == 5 and ntaps * npairs >= PAIR_MIN_PAIRS and nch > NR // 2


@njit(cache=True, inline="always")
def tile_pair(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
    """2 * MR pixels x NR channels of the avx512-vnni row (kind 5) in one tile: 16 zmm accumulators
    hide `vpdpbusd`'s latency and each weight load serves 8 pixels (the generic-IR twin where the
    CPU lacks VNNI)."""
    if _HAS_AVX512_VNNI:
        _tile_avx512_vnni8(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    else:
        _tile_vnni8_emulated(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)


@njit(cache=True, inline="always")
def tile_w16(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
    """`tile` for int16 weights (the "-w16" rows)."""
    if kind == 4 and _HAS_AVX2:
        _tile_avx2_w16(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    elif kind == 7 and _HAS_AVX512_VNNI:
        _tile_avx512_vnni_w16(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    elif kind == 8 and _HAS_AVX_VNNI:
        _tile_avx_vnni_w16(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    elif kind == 7 or kind == 8:  # a VNNI row on a CPU without it: the same integers in generic IR
        _tile_vnni_w16_emulated(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    else:
        _tile_portable(w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)


def any_tile(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride, nch=NR):  # noqa: ANN001, ANN201
    """`tile` or `tile_w16` by the weights' dtype, chosen when the driver compiles; `tile_half`
    where the block holds at most 16 channels (nch) and the weights are ternary."""


@overload(any_tile, inline="always")
def _any_tile(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride, nch=NR):  # noqa: ANN001, ANN202
    if w.dtype == types.int16:
        def w16(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride, nch=NR):
            tile_w16(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
        return w16

    def ternary(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride, nch=NR):
        if nch <= NR // 2:
            tile_half(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
        else:
            tile(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    return ternary



def any_tile_pair(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):  # noqa: ANN001, ANN201
    """`tile_pair` where the weights are ternary (a driver calls it only where `takes_pair`)."""


@overload(any_tile_pair, inline="always")
def _any_tile_pair(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):  # noqa: ANN001, ANN202
    if w.dtype == types.int16:  # never taken (`takes_pair`), but the driver compiles for int16 panels too
        def w16(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
            tile_w16(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
            tile_w16(kind, w, woff, x, offs, ooff + MR * ntaps, ntaps, npairs, out, oidx + MR * ostride, ostride)
        return w16

    def ternary(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride):
        tile_pair(kind, w, woff, x, offs, ooff, ntaps, npairs, out, oidx, ostride)
    return ternary
