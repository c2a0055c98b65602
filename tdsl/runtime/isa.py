"""The ISA layer: what the CPU has, what Numba may use, and the LLVM vector helpers of the
micro-kernels (`tdsl.runtime.microkernels`).

A micro-kernel written with `llvm.x86.*` intrinsics must never be compiled where the CPU
lacks the feature (LLVM aborts the process on an instruction it cannot select) nor run there
(SIGILL). `has(feature)` answers both questions at once: the host has it *and* Numba
generates code for a target that has it (a `NUMBA_CPU_NAME` / `NUMBA_CPU_FEATURES` override
that drops it rules it out). Kernels read the answers once, at import, as constants, so
Numba prunes the branches of the paths this CPU cannot run.

AMX tiles need more than a feature bit: Linux hands out the tile data state only on request
(`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, once per process, before the first
tile instruction: else SIGILL), and every thread must load a tile configuration
(`ldtilecfg`) before using the tiles. `amx_permission()` makes the request; the AMX
micro-kernel loads its configuration itself at each call, so worker threads need no set-up.
"""
from __future__ import annotations

import ctypes
import contextlib
import functools
import platform
from collections.abc import Iterator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

FEATURES: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "avx512bw": ("avx512f", "avx512bw"),
    "avx512_vnni": ("avx512f", "avx512bw", "avx512vnni"),
    "avx_vnni": ("avxvnni",),
    "amx_int8": ("amx-tile", "amx-int8"),
}
"""Each ISA the runtime has kernels for, as the LLVM feature names it needs."""

_SYS_ARCH_PRCTL = 158
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


def _feature_set(flags: str) -> set[str]:
    """{'avx512f', ...} from an LLVM feature string like '+avx512f,-sse4a,...'."""
    return {f[1:] for f in flags.split(",") if f.startswith("+")}


@functools.lru_cache(maxsize=None)
def host_features() -> frozenset[str]:
    """The LLVM features of this CPU (llvmlite's reading of CPUID)."""
    import llvmlite.binding as llvm

    return frozenset(_feature_set(llvm.get_host_cpu_features().flatten()))


@functools.lru_cache(maxsize=None)
def usable(features: tuple[str, ...]) -> bool:
    """True if this CPU has all LLVM `features` and Numba generates code that may use them."""
    import numba

    if not all(f in host_features() for f in features):
        return False
    if numba.config.CPU_FEATURES:  # Numba compiles for these features, not the host's
        return all(f in _feature_set(numba.config.CPU_FEATURES) for f in features)
    if numba.config.CPU_NAME and numba.config.CPU_NAME not in ("host", "native"):
        return False  # a named generic target: we cannot tell, stay portable
    return True


def has(isa: str) -> bool:
    """True if this CPU has `isa` (a key of FEATURES) and Numba generates code that may use it."""
    return usable(FEATURES[isa])


_emulated: frozenset[str] = frozenset()


@contextlib.contextmanager
def emulate(*isas: str) -> Iterator[None]:
    """Within the block the micro-kernel rows of `isas` (keys of FEATURES) count as available on
    any CPU and run their emulation (AMX: `amx.emulated_block`; VNNI: `dpbusd(emulated=True)`),
    the same integers: how the tests run those rows' drivers, panels and tiles where the CPU
    lacks them. `has` still answers for the hardware (an instruction the CPU lacks is never
    compiled). Nothing else turns it on."""
    global _emulated
    unknown = set(isas) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown ISA(s) {sorted(unknown)}: valid are {sorted(FEATURES)}")
    previous, _emulated = _emulated, _emulated | frozenset(isas)
    try:
        yield
    finally:
        _emulated = previous


def emulating(isa: str) -> bool:
    """Whether `emulate` is on for `isa`."""
    return isa in _emulated


@functools.lru_cache(maxsize=None)
def amx_permission() -> bool:
    """Ask Linux for the AMX tile data state (once per process); True when granted."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64") or not has("amx_int8"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


def summary() -> str:
    """'avx2, avx512_vnni, ...': the ISAs of FEATURES this process can run (for reports)."""
    return ", ".join(isa for isa in FEATURES if has(isa)) or "none (portable kernels only)"


# ---------------------------------------------------------------------------------------
# LLVM vector helpers shared by the micro-kernels

I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
V32I8 = ir.VectorType(I8, 32)
V16I16 = ir.VectorType(I16, 16)
V8I16 = ir.VectorType(I16, 8)
V8I32 = ir.VectorType(I32, 8)


def data_ptr(context, builder, aryty, ary, elem=I8):  # noqa: ANN001, ANN201 - llvmlite codegen
    """The array's data pointer as `elem*`."""
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(data, elem.as_pointer())


def pmaddubsw(builder, u8, s8):  # noqa: ANN001, ANN201
    """AVX2 vpmaddubsw: i16 lane l = u8[2l]*s8[2l] + u8[2l+1]*s8[2l+1] (saturating)."""
    fnty = ir.FunctionType(V16I16, [V32I8, V32I8])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx2.pmadd.ub.sw")
    return builder.call(fn, [u8, s8])


def broadcast_i16(builder, ptr8):  # noqa: ANN001, ANN201
    """<32 x i8>: the two bytes at ptr8 repeated 16 times (vpbroadcastw)."""
    value = builder.load(builder.bitcast(ptr8, I16.as_pointer()), align=1)
    undef = ir.Constant(V16I16, ir.Undefined)
    vec = builder.insert_element(undef, value, ir.Constant(I32, 0))
    splat = builder.shuffle_vector(vec, undef, ir.Constant(ir.VectorType(I32, 16), [0] * 16))
    return builder.bitcast(splat, V32I8)


def for_groups(builder, n, group, body, after_group):  # noqa: ANN001
    """for g0 in range(0, n, group): for i in range(g0, min(n, g0 + group)): body(i); then
    after_group() once per group (where i16 partial sums are widened)."""
    ity = n.type
    ngroups = builder.udiv(builder.add(n, ir.Constant(ity, group - 1)), ir.Constant(ity, group))
    with cgutils.for_range(builder, ngroups) as outer:
        start = builder.mul(outer.index, ir.Constant(ity, group))
        left = builder.sub(n, start)
        count = builder.select(builder.icmp_signed(">", left, ir.Constant(ity, group)), ir.Constant(ity, group), left)
        with cgutils.for_range(builder, count) as inner:
            body(builder.add(start, inner.index))
        after_group()


def widen_i16(builder, v16):  # noqa: ANN001, ANN201
    """(<8 x i32> of lanes 0-7, <8 x i32> of lanes 8-15) of a <16 x i16>, sign-extended."""
    lo = builder.shuffle_vector(v16, v16, ir.Constant(ir.VectorType(I32, 8), list(range(8))))
    hi = builder.shuffle_vector(v16, v16, ir.Constant(ir.VectorType(I32, 8), list(range(8, 16))))
    return builder.sext(lo, V8I32), builder.sext(hi, V8I32)


def dpbusd(builder, acc, u8, s8, emulated: bool = False):  # noqa: ANN001, ANN201
    """acc + (for each i32 lane) the sum of its four u8 x s8 byte products, wrapping as
    `vpdpbusd` does: the instruction (zmm or ymm by acc's width; u8 and s8 any vectors of the
    same bytes), or the same integers in generic IR (`emulated`: any CPU)."""
    lanes = acc.type.count
    if not emulated:
        vty = ir.VectorType(I32, lanes)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                            f"llvm.x86.avx512.vpdpbusd.{32 * lanes}")
        return builder.call(fn, [acc, builder.bitcast(u8, vty), builder.bitcast(s8, vty)])
    wide = ir.VectorType(I32, 4 * lanes)
    prod = builder.mul(builder.zext(u8, wide), builder.sext(s8, wide))
    for kk in range(4):
        acc = builder.add(acc, builder.shuffle_vector(prod, prod, ir.Constant(ir.VectorType(I32, lanes),
                                                                               [4 * i + kk for i in range(lanes)])))
    return acc


def dpwssd(builder, acc, a16, b16, emulated: bool = False):  # noqa: ANN001, ANN201
    """acc + (for each i32 lane) the sum of its two s16 x s16 products, wrapping as `vpdpwssd`
    does: the instruction (zmm or ymm by acc's width; a16 and b16 any vectors of the same
    bytes), or the same integers in generic IR (`emulated`: any CPU)."""
    lanes = acc.type.count
    vty = ir.VectorType(I32, lanes)
    if not emulated:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                            f"llvm.x86.avx512.vpdpwssd.{32 * lanes}")
        return builder.call(fn, [acc, builder.bitcast(a16, vty), builder.bitcast(b16, vty)])
    h16, wide = ir.VectorType(I16, 2 * lanes), ir.VectorType(I32, 2 * lanes)
    prod = builder.mul(builder.sext(builder.bitcast(a16, h16), wide), builder.sext(builder.bitcast(b16, h16), wide))
    for kk in range(2):
        acc = builder.add(acc, builder.shuffle_vector(prod, prod, ir.Constant(ir.VectorType(I32, lanes),
                                                                               [2 * i + kk for i in range(lanes)])))
    return acc


def prefetch_line(builder, ptr) -> None:  # noqa: ANN001 - llvmlite codegen
    """`prefetcht0` of the cache line at ptr (never faults, so it may run past the array):
    the weight streams of the decode GEMVs (`gemm`, `lm_head`) prefetch ahead with it."""
    i8p = I8.as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [i8p, I32, I32, I32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])


def store_tile(context, builder, aryty, ary, ooff, ostride, accs) -> None:  # noqa: ANN001
    """Store accumulator slots accs[m][v] (vectors of int32 lanes) into the int32 array at
    element ooff + m*ostride + v*lanes: one micro-kernel tile, rows m, vectors v."""
    store_values(context, builder, aryty, ary, ooff, ostride, [[builder.load(slot) for slot in row] for row in accs])


def store_values(context, builder, aryty, ary, ooff, ostride, values) -> None:  # noqa: ANN001
    """`store_tile` of vectors values[m][v] (not slots): element ooff + m*ostride + v*lanes."""
    ity = ooff.type
    data = context.make_array(aryty)(context, builder, ary).data
    for m, row in enumerate(values):
        for v, value in enumerate(row):
            idx = builder.add(ooff, builder.add(builder.mul(ostride, ir.Constant(ity, m)),
                                                ir.Constant(ity, value.type.count * v)))
            builder.store(value, builder.bitcast(builder.gep(data, [idx]), value.type.as_pointer()), align=4)


@intrinsic
def claim(typingctx, counter):  # noqa: ANN001, ANN201
    """The next task number: an atomic fetch-and-add of 1 on counter[0] (an int64 array), so
    the threads of a parallel region take tasks as they free up (dynamic scheduling) instead
    of a fixed share each: a thread descheduled for a time slice no longer holds back work
    the others could do."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = data_ptr(context, builder, signature.args[0], args[0], I64)
        return builder.atomic_rmw("add", ptr, ir.Constant(I64, 1), "monotonic")

    return types.int64(counter), codegen


@intrinsic
def umax_u8(typingctx, dst, doff, src, soff, nvec):  # noqa: ANN001, ANN201
    """dst[doff + i] = max(dst[doff + i], src[soff + i]) for i < 32 * nvec (u8 arrays), in
    32-byte vectors (`llvm.umax`: `vpmaxub` with AVX2, `pmaxub` with SSE2): the byte loop
    with a compare does not vectorise where the two arrays may overlap."""
    if not all(isinstance(a, types.Array) and a.dtype == types.uint8 for a in (dst, src)):
        return None

    def codegen(context, builder, signature, args):
        dv, dov, sv, sov, nv = args
        dp = builder.bitcast(builder.gep(data_ptr(context, builder, signature.args[0], dv), [dov]), V32I8.as_pointer())
        sp = builder.bitcast(builder.gep(data_ptr(context, builder, signature.args[2], sv), [sov]), V32I8.as_pointer())
        umax = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V32I8, [V32I8, V32I8]),
                                              "llvm.umax.v32i8")
        with cgutils.for_range(builder, nv) as loop:
            d = builder.gep(dp, [loop.index])
            m = builder.call(umax, [builder.load(d, align=1), builder.load(builder.gep(sp, [loop.index]), align=1)])
            builder.store(m, d, align=1)
        return context.get_dummy_value()

    return types.none(dst, doff, src, soff, nvec), codegen
