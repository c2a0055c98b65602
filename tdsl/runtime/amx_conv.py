"""The conv driver of the AMX micro-kernel: (NHWC indirection producer) x (AMX 32 x 32 block).

A task takes 32 output pixels. It gathers their input rows through the indirection buffer
(`nhwc_int8.indirection`: one byte offset a tap, padding taps at the zero-point row) into one
A panel of 32 rows x Kp bytes (tap-major, channels within a tap, zero bytes up to a multiple
of 64), then calls the AMX block (`amx.build_ir`: C[32 x 32] = A . B over Kp / 64 tile steps)
once per 32-channel block of the task's group, and runs the same fused epilogue as the AVX2
driver (`_requant_rows` for static scales with a clamp activation, `_epilogue` otherwise) on
the 4 KB of int32 it stored. Gathering costs one copy of 32 x Kp bytes a task, which each
block's `tdpbusd`s then reuse: 16 x 16 x 64 multiply-adds an instruction against the 64-byte
rows a `tileloadd` reads, so A is read from L1/L2 once for every 32 output channels.

The block is called through its address (`call_block`): the AMX function where the CPU has
AMX-INT8 (`amx.gemm_function`), or `amx.emulated_block`, the same C signature computing the
same integers with scalar code, which is how this driver's gathering, padding, panel
addressing and epilogue are tested bit-exact on CPUs without AMX.
"""
from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from tdsl.runtime import amx, isa
from tdsl.runtime.isa import claim
from tdsl.runtime.nhwc_int8 import (_epilogue, _requant_rows, _row_bytes, epilogue_setup, epilogue_terms, fill_padding,
                                    fill_zero_row)

ROWS, COLS, KSTEP = amx.ROWS, amx.COLS, amx.KSTEP


def k_bytes(ntaps: int, cp: int) -> int:
    """Kp: the A panel's row bytes (ntaps taps of cp channels, rounded up to a tile step)."""
    return -(-ntaps * cp // KSTEP) * KSTEP


def panels(ints: np.ndarray, cp: int) -> np.ndarray:
    """The B panels of integer weights [O, C, kh, kw] (ternary, int8) in the A panel's order:
    int8 [ceil(O / 32) * 2, Kp / 4, 64] (`amx.vnni4x16_panels` of [O padded to 32, Kp])."""
    O, C, kh, kw = ints.shape
    ntaps = kh * kw
    kp = k_bytes(ntaps, cp)
    rows = np.zeros((-(-O // COLS) * COLS, kh, kw, cp), np.int8)
    rows[:O, :, :, :C] = ints.transpose(0, 2, 3, 1)
    full = np.zeros((rows.shape[0], kp), np.int8)
    full[:, :ntaps * cp] = rows.reshape(rows.shape[0], -1)
    return amx.vnni4x16_panels(full)


_I8P = ir.IntType(8).as_pointer()
_BLOCK_TYPE = ir.FunctionType(ir.VoidType(), [_I8P, isa.I64, _I8P, _I8P, isa.I64, isa.I32.as_pointer(), isa.I64,
                                              _I8P])


@intrinsic
def call_block(typingctx, address, a, aoff, lda, b, boff0, boff1, ksteps, c, cfg):  # noqa: ANN001, ANN201
    """block(&a[aoff], lda, &b[boff0], &b[boff1], ksteps, &c[0], 4 * COLS, &cfg[0]) for the
    function at `address` with the AMX block's C signature (`amx.build_ir`)."""
    if not (a.dtype == types.uint8 and b.dtype == types.int8 and c.dtype == types.int32 and cfg.dtype == types.uint8):
        return None
    sig = types.none(address, a, aoff, lda, b, boff0, boff1, ksteps, c, cfg)

    def codegen(context, builder, signature, args):
        addr, av, aoffv, ldav, bv, b0v, b1v, kv, cv, cfgv = args
        at = signature.args
        abase = isa.data_ptr(context, builder, at[1], av)
        bbase = isa.data_ptr(context, builder, at[4], bv)
        fn = builder.inttoptr(addr, _BLOCK_TYPE.as_pointer())
        builder.call(fn, [builder.gep(abase, [aoffv]), ldav, builder.gep(bbase, [b0v]), builder.gep(bbase, [b1v]), kv,
                          isa.data_ptr(context, builder, at[8], cv, isa.I32), ir.Constant(isa.I64, 4 * COLS),
                          isa.data_ptr(context, builder, at[9], cfgv)])
        return context.get_dummy_value()

    return sig, codegen


def block_address() -> int:
    """The AMX block's address (a TdslError where the CPU lacks AMX-INT8, as `amx.gemm_function`);
    the emulated block's inside `isa.emulate("amx_int8")`."""
    if isa.emulating("amx_int8"):
        return amx.emulated_block().address
    return ctypes.cast(amx.gemm_function(), ctypes.c_void_p).value


@njit(inline="always", cache=True)
def _gather(x, offs, p0, np_, ntaps, cp, kp, a):
    """A panel rows 0..31: pixel p0 + m's taps (cp bytes each, tap-major), zero bytes after
    ntaps * cp and in the rows past np_."""
    a[:] = 0
    for m in range(np_):
        for t in range(ntaps):
            src = offs[(p0 + m) * ntaps + t]
            dst = m * kp + t * cp
            a[dst:dst + cp] = x[src:src + cp]


@njit(cache=True, parallel=True)
def conv(block, cfg, x, offs, ntaps, cp, kp, bpanels, P, O, wsum, zpx, se, bias, res, rs, rzp, act, out, inv_sy, zpy,
         yf, lohi, workers):
    """One ternary conv of u8 NHWC x on AMX blocks, outputs as `nhwc_int8.conv` (static: u8
    NHWC rows of `_row_bytes(O)` bytes; dynamic: float32 yf [P, O] with each task's range in
    lohi [ceil(P / 32) * groups, 2], `tasks`). block: the block's address (`block_address`,
    or `amx.emulated_block.address`); cfg: `amx.tile_config()`; bpanels: `panels`."""
    m_, c_, rsi, qlo, qhi = epilogue_terms(wsum, zpx, se, bias, inv_sy, zpy, act, res, rs, rzp)
    cpo = _row_bytes(O)
    static, zf, inv, corr, code, amin, amax, clamp_static = epilogue_setup(wsum, zpx, inv_sy, zpy, act, yf)
    ntiles = (P + ROWS - 1) // ROWS
    nblocks = (O + COLS - 1) // COLS
    ngroups = groups(ntiles, nblocks, workers)
    per_group = (nblocks + ngroups - 1) // ngroups
    ksteps = kp // KSTEP
    panel_bytes = kp * 16  # one 16-channel panel: kp / 4 rows of 64 bytes
    ntasks = ntiles * ngroups
    for r in range(ntasks, lohi.shape[0]):  # rows a call with fewer workers leaves: no stale ranges
        lohi[r, 0] = np.float32(np.inf)
        lohi[r, 1] = np.float32(-np.inf)
    nw = max(1, min(workers, ntasks))
    counter = np.zeros(1, np.int64)
    for w in prange(nw):
        a = np.empty(ROWS * kp, np.uint8)
        c = np.empty(ROWS * COLS, np.int32)
        while True:
            task = claim(counter)  # dynamic: a descheduled worker holds back one task at most
            if task >= ntasks:
                break
            t = task // ngroups
            g = task - t * ngroups
            p0 = t * ROWS
            np_ = min(ROWS, P - p0)
            lohi[task, 0] = np.float32(np.inf)
            lohi[task, 1] = np.float32(-np.inf)
            _gather(x, offs, p0, np_, ntaps, cp, kp, a)
            for b in range(g * per_group, min(nblocks, (g + 1) * per_group)):
                o0 = b * COLS
                no = min(COLS, O - o0)
                call_block(block, a, 0, kp, bpanels, 2 * b * panel_bytes, (2 * b + 1) * panel_bytes, ksteps, c, cfg)
                if clamp_static:
                    _requant_rows(c, COLS, np_, no, o0, m_, c_, res, rsi, qlo, qhi, out, p0 * cpo + o0, cpo)
                else:
                    for m in range(np_):
                        p = p0 + m
                        _epilogue(c, m * COLS, no, o0, corr, se, bias, res, p * cpo + o0, rs, rzp, code, amin, amax,
                                  static, out, p * cpo + o0, inv, zf, yf, p, lohi, task)
            if static and g == ngroups - 1:
                fill_padding(out, p0, p0 + np_, O, cpo, zpy)
    if static:
        fill_zero_row(out, P, cpo, zpy)


@njit(inline="always", cache=True)
def groups(ntiles, nblocks, workers):
    """Groups of 32-channel blocks a 32-pixel tile splits into: one (A gathered once for every
    block) unless there are fewer than 4 tasks a worker, then as many as that needs."""
    want = 4 * workers
    if ntiles >= want:
        return 1
    return min(nblocks, (want + ntiles - 1) // ntiles)


def tasks(P: int, O: int, workers: int) -> int:
    """The rows of `lohi` a `conv` call with these sizes writes."""
    ntiles = -(-P // ROWS)
    return ntiles * groups(ntiles, -(-O // COLS), workers)


def max_tasks(P: int, O: int) -> int:
    """Rows of `lohi` enough for any number of workers (the rows past a call's tasks it sets to
    an empty range)."""
    return -(-P // ROWS) * -(-O // COLS)
