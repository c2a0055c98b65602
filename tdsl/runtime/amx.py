"""AMX int8 tiles: a 32 x 32 int32 GEMM block of u8 rows times ternary s8 panels.

`tdpbusd` multiplies a 16 x 64-byte tile of u8 activations by a 16 x 64-byte tile of s8
weights packed four k to a dword (the "vnni4x16" panel: `vnni4x16_panels`) into a 16 x 16
int32 tile, 1024 multiply-adds an instruction. The block here keeps 2 x 2 accumulator tiles
(tmm0-3), two A tiles (tmm4-5: rows 0-15 and 16-31) and two B tiles (tmm6-7: output channels
0-15 and 16-31), steps k by 64 bytes and stores C to memory: there is no tile-to-register
move, so the epilogue reads C from L1, as on every AMX kernel.

llvmlite has no `x86_amx` type, so the kernel is LLVM IR built with llvmlite's IR builder
from the immediate-operand intrinsics (`llvm.x86.tileloadd64(i8 tile, ptr, stride)`, ...)
and compiled on its own: for the host (`gemm_function`: only where the CPU has AMX-INT8 and
Linux granted the tile data, `tdsl.runtime.isa.amx_permission`) or, on any machine, for a
named CPU (`assembly("sapphirerapids")`: what the tests check where no AMX CPU is at hand).
The 64-byte tile configuration is loaded at every call (`ldtilecfg`), so each thread that
calls it is configured.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, types

from tdsl.runtime import isa

NAME = "tdsl_amx_block"
ROWS = 32
"""Output rows (pixels) per block: two A tiles of 16."""
COLS = 32
"""Output channels per block: two B tiles of 16."""
KSTEP = 64
"""k bytes per tile step."""


def tile_config() -> np.ndarray:
    """The 64-byte palette-1 configuration: 8 tiles of 16 rows x 64 bytes."""
    cfg = np.zeros(64, np.uint8)
    cfg[0] = 1
    colsb = cfg[16:32].view(np.uint16)
    colsb[:8] = 64
    cfg[48:56] = 16
    return cfg


def vnni4x16_panels(trits: np.ndarray) -> np.ndarray:
    """int8 [N/16, K/4, 64] of weights [N, K] (N a multiple of 16, K of 64): row r of a panel tile
    holds k = 4r..4r+3 for each of its 16 columns, the B layout `tdpbusd` reads."""
    N, K = trits.shape
    w = trits.astype(np.int8).reshape(N // 16, 16, K // 4, 4)
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3).reshape(N // 16, K // 4, 64))


def build_ir() -> ir.Module:
    """void tdsl_amx_block(i8* a, i64 lda, i8* b0, i8* b1, i64 ksteps, i32* c, i64 ldc_bytes, i8* cfg):
    C[32 x 32] = A[32 rows of lda bytes] . B, B given as two 16-column panels (b0, b1) of
    ksteps tiles of 16 x 64 bytes each."""
    i8, i64, void = ir.IntType(8), ir.IntType(64), ir.VoidType()
    i8p = i8.as_pointer()
    mod = ir.Module(name="tdsl_amx")
    mod.triple = "x86_64-unknown-linux-gnu"

    def intrinsic(name: str, args: list[ir.Type]) -> ir.Function:
        return ir.Function(mod, ir.FunctionType(void, args), name=name)

    ldtilecfg = intrinsic("llvm.x86.ldtilecfg", [i8p])
    tilezero = intrinsic("llvm.x86.tilezero", [i8])
    tileload = intrinsic("llvm.x86.tileloadd64", [i8, i8p, i64])
    tdpbusd = intrinsic("llvm.x86.tdpbusd", [i8, i8, i8])
    tilestore = intrinsic("llvm.x86.tilestored64", [i8, i8p, i64])
    tilerelease = intrinsic("llvm.x86.tilerelease", [])
    fn = ir.Function(mod, ir.FunctionType(void, [i8p, i64, i8p, i8p, i64, ir.IntType(32).as_pointer(), i64, i8p]),
                     name=NAME)
    a, lda, b0, b1, ksteps, c, ldc, cfg = fn.args
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("loop")
    done = fn.append_basic_block("done")
    builder = ir.IRBuilder(entry)
    t = [ir.Constant(i8, n) for n in range(8)]
    builder.call(ldtilecfg, [cfg])
    for n in range(4):
        builder.call(tilezero, [t[n]])
    a16 = builder.gep(a, [builder.mul(lda, ir.Constant(i64, 16))])
    builder.branch(loop)
    builder.position_at_end(loop)
    k = builder.phi(i64)
    k.add_incoming(ir.Constant(i64, 0), entry)
    koff = builder.mul(k, ir.Constant(i64, KSTEP))
    boff = builder.mul(k, ir.Constant(i64, 16 * KSTEP))
    builder.call(tileload, [t[4], builder.gep(a, [koff]), lda])
    builder.call(tileload, [t[5], builder.gep(a16, [koff]), lda])
    builder.call(tileload, [t[6], builder.gep(b0, [boff]), ir.Constant(i64, KSTEP)])
    builder.call(tileload, [t[7], builder.gep(b1, [boff]), ir.Constant(i64, KSTEP)])
    builder.call(tdpbusd, [t[0], t[4], t[6]])
    builder.call(tdpbusd, [t[1], t[4], t[7]])
    builder.call(tdpbusd, [t[2], t[5], t[6]])
    builder.call(tdpbusd, [t[3], t[5], t[7]])
    nxt = builder.add(k, ir.Constant(i64, 1))
    k.add_incoming(nxt, loop)
    builder.cbranch(builder.icmp_signed("<", nxt, ksteps), loop, done)
    builder.position_at_end(done)
    c8 = builder.bitcast(c, i8p)
    rows16 = builder.mul(ldc, ir.Constant(i64, 16))
    for n, (dr, dc) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        base = builder.gep(c8, [builder.add(builder.mul(rows16, ir.Constant(i64, dr)), ir.Constant(i64, 64 * dc))])
        builder.call(tilestore, [t[n], base, ldc])
    builder.call(tilerelease, [])
    builder.ret_void()
    return mod


def _target_machine(cpu: str, features: str):  # noqa: ANN202 - llvmlite object
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple("x86_64-unknown-linux-gnu")
    return target.create_target_machine(cpu=cpu, features=features, opt=2, codemodel="default")


def assembly(cpu: str = "sapphirerapids") -> str:
    """The block compiled for `cpu` (any machine can do this; only an AMX CPU can run it)."""
    import llvmlite.binding as llvm

    module = llvm.parse_assembly(str(build_ir()))
    module.verify()
    return _target_machine(cpu, "+amx-tile,+amx-int8").emit_assembly(module)


@functools.lru_cache(maxsize=None)
def gemm_function():  # noqa: ANN201 - a ctypes function
    """The block compiled for this CPU, as a ctypes function (callable from Numba too); a
    TdslError where the CPU lacks AMX-INT8 or Linux refused the tile data."""
    import llvmlite.binding as llvm

    from tdsl.errors import TdslError

    if not isa.has("amx_int8"):
        raise TdslError("the AMX kernel needs a CPU with AMX-INT8 (amx_tile, amx_int8 in /proc/cpuinfo)")
    if not isa.amx_permission():
        raise TdslError("Linux refused the AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM)")
    module = llvm.parse_assembly(str(build_ir()))
    module.verify()
    engine = llvm.create_mcjit_compiler(module, _target_machine(llvm.get_host_cpu_name(), "+amx-tile,+amx-int8"))
    engine.finalize_object()
    address = engine.get_function_address(NAME)
    proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                             ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p)
    fn = proto(address)
    fn._engine = engine  # keep the compiled code alive with the function
    return fn


def gemm(a: np.ndarray, trits: np.ndarray) -> np.ndarray:
    """int32 a @ trits.T on AMX tiles, for a u8 [M, K] and ternary int8 [N, K] with M, N
    multiples of 32 and K of 64 (a reference driver: the tests compare it with numpy)."""
    fn = gemm_function()
    M, K = a.shape
    N = trits.shape[0]
    a = np.ascontiguousarray(a, np.uint8)
    panels = vnni4x16_panels(trits)
    c = np.empty((M, N), np.int32)
    block = np.empty((ROWS, COLS), np.int32)
    cfg = tile_config()
    for i in range(0, M, ROWS):
        for j in range(0, N, COLS):
            fn(a[i:].ctypes.data, K, panels[j // 16].ctypes.data, panels[j // 16 + 1].ctypes.data, K // KSTEP,
               block.ctypes.data, COLS * 4, cfg.ctypes.data)
            c[i:i + ROWS, j:j + COLS] = block
    return c


def _emulate(a, lda, b0, b1, ksteps, c, ldc, cfg):  # noqa: ANN001, ANN202 - a cfunc body
    """What the block computes (`build_ir`), in scalar code: C[r, j] for r, j < 32 is the sum
    over k < 64 * ksteps of A[r * lda + k] (u8) x B (s8, panel j // 16, row k // 4, byte
    4 * (j % 16) + k % 4), stored as int32 rows of ldc bytes."""
    kb = ksteps * KSTEP
    av = carray(a, (ROWS * lda,))
    bv = (carray(b0, (kb * 16,)), carray(b1, (kb * 16,)))
    cv = carray(c, (ROWS * (ldc // 4),))
    for r in range(ROWS):
        for j in range(COLS):
            panel = bv[j // 16]
            col = 4 * (j % 16)
            acc = np.int32(0)
            for k in range(kb):
                acc += np.int32(av[r * lda + k]) * np.int32(panel[(k // 4) * 64 + col + k % 4])
            cv[r * (ldc // 4) + j] = acc


@functools.lru_cache(maxsize=None)
def emulated_block():  # noqa: ANN201 - a numba cfunc
    """`_emulate` compiled as a C function of the block's signature (`.address` for
    `amx_conv.call_block`): the reference on CPUs without AMX, where the tests run the AMX
    drivers' gathering, panel addressing and epilogues against numpy bit for bit."""
    sig = types.void(types.CPointer(types.uint8), types.int64, types.CPointer(types.int8), types.CPointer(types.int8),
                     types.int64, types.CPointer(types.int32), types.int64, types.CPointer(types.uint8))
    return cfunc(sig, cache=True)(_emulate)
