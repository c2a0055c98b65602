"""The VNNI micro-kernel rows (avx512-vnni, avx-vnni): compiled to `vpdpbusd` for CPUs that have
it on any machine (a child process whose Numba targets that CPU, compile only), run bit for
bit against the other rows in test_nhwc_int8.py (in generic IR where this CPU lacks VNNI), and
chosen by `select` only where they run."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tdsl.runtime import microkernels as mk

CHILD = textwrap.dedent("""
    import re, sys
    from tdsl.runtime import isa
    features = frozenset(sys.argv[2].split(","))
    isa.host_features = lambda: features  # the CPU the child compiles for, not this one
    from numba import njit, types
    from tdsl.runtime import microkernels as mk
    assert mk._HAS_AVX512_VNNI == ("avx512vnni" in features) and mk._HAS_AVX_VNNI == ("avxvnni" in features)

    @njit
    def block(kind, w, x, offs, out):
        mk.tile(kind, w, 0, x, offs, 0, 9, 8, out, 0, 32)
        mk.tile_half(kind, w, 0, x, offs, 0, 9, 8, out, 0, 32)
        mk.tile_pair(kind, w, 0, x, offs, 0, 9, 8, out, 0, 32)

    @njit
    def block16(kind, w, x, offs, out):
        mk.tile_w16(kind, w, 0, x, offs, 0, 9, 8, out, 0, 32)

    arr = lambda dt: types.Array(dt, 1, "C")
    sig = (types.int64, arr(types.int8), arr(types.uint8), arr(types.int64), arr(types.int32))
    sig16 = (types.int64, arr(types.int16)) + sig[2:]
    block.compile(sig)  # compiled for the named CPU, never run here
    block16.compile(sig16)
    asm = block.inspect_asm(sig)
    asm16 = block16.inspect_asm(sig16)
    print("zmm", len(re.findall(r"vpdpbusd\\s+[^\\n]*zmm", asm)), "ymm", len(re.findall(r"vpdpbusd\\s+[^\\n]*ymm", asm)),
          "w16zmm", len(re.findall(r"vpdpwssd\\s+[^\\n]*zmm", asm16)),
          "w16ymm", len(re.findall(r"vpdpwssd\\s+[^\\n]*ymm", asm16)))
""")


def compiled_for(cpu: str, features: list[str], tmp_path) -> dict[str, int]:
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=",".join("+" + f for f in features),
               NUMBA_CACHE_DIR=str(tmp_path))  # code for another CPU never lands in the shared cache
    done = subprocess.run([sys.executable, "-c", CHILD, cpu, ",".join(features)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    words = done.stdout.split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


BASE = ["sse4.2", "avx", "avx2", "fma", "f16c", "bmi", "bmi2", "popcnt"]


def test_the_avx512_row_compiles_to_zmm_vpdpbusd_for_sapphire_rapids(tmp_path):
    got = compiled_for("sapphirerapids", BASE + ["avx512f", "avx512bw", "avx512vl", "avx512vnni", "avxvnni"],
                       tmp_path)
    assert got["zmm"] >= 8 + 4 + 16  # tile: 4 pixels x 2 vectors; half: 4 x 1; pair: 8 x 2 (may be unrolled)
    assert got["ymm"] >= 16 + 8  # the avx-vnni row's tiles, compiled beside it
    assert got["w16zmm"] >= 8 and got["w16ymm"] >= 16  # the -w16 rows: 4 pixels x 2 zmm / 4 ymm


def test_the_avx_vnni_row_compiles_to_ymm_vpdpbusd_without_avx512(tmp_path):
    got = compiled_for("alderlake", BASE + ["avxvnni"], tmp_path)
    assert got["zmm"] == 0 and got["ymm"] >= 16 + 8  # tile_pair's 8-pixel tile is the avx512 row's only
    assert got["w16zmm"] == 0 and got["w16ymm"] >= 16


def test_vnni_rows_are_picked_only_where_they_run():
    for name in ("avx-vnni", "avx512-vnni"):
        row = mk.by_name(name)
        assert row.panel == "k4x32" and row.drivers == ("conv",)
        assert row.available() == mk.isa.has(row.isa)
    from tdsl.backends.numba.executor import microkernel_for
    from tdsl.runtime.cpu_features import forced_kernel_path

    with mk.isa.emulate("avx512_vnni", "avx_vnni"):
        assert mk.by_name("avx512-vnni").available() and mk.k2x32_row().name == "avx512-vnni"
        # a deployment's row: the fastest on auto, the forced path's own row otherwise
        assert microkernel_for(None).name == "avx512-vnni" and microkernel_for("avx-vnni").name == "avx-vnni"
        with forced_kernel_path("portable"):
            assert microkernel_for(None).name == "portable"
        assert mk.int16_row(mk.by_name("avx512-vnni")).weights == "int16"  # kept layers: the best -w16 row
        assert mk.isa.has("avx512_vnni") == mk._HAS_AVX512_VNNI  # the hardware's answer, not the emulation's
    with pytest.raises(ValueError, match="unknown ISA"):
        with mk.isa.emulate("avx1024"):
            pass
    if not mk.isa.has("avx512_vnni") and not mk.isa.has("amx_int8"):
        assert mk.select().name not in ("avx512-vnni", "amx")


HW = {512: mk.isa.has("avx512_vnni"), 256: mk.isa.has("avx512_vnni") or mk.isa.has("avx_vnni")}


@pytest.mark.parametrize("emulated", [True, pytest.param(False, id="instruction")])
@pytest.mark.parametrize("op", ["dpbusd", "dpwssd"])
@pytest.mark.parametrize("bits", [512, 256])
def test_dot_products_wrap_like_numpy(bits, op, emulated):
    """`isa.dpbusd` (four u8 x s8 products per i32 lane) and `isa.dpwssd` (two s16 x s16) add into
    the accumulator with int32 wraparound, as the instructions do (no saturation): the generic
    IR on any CPU, the instruction where this CPU has it."""
    import numpy as np
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    if not emulated and not HW[bits]:
        pytest.skip(f"this CPU has no {bits}-bit VNNI: the generic-IR twin of this case ran")
    lanes = bits // 32

    @intrinsic
    def dp(typingctx, acc, u, s):
        def codegen(context, builder, signature, args):
            ptr = [cgutils.create_struct_proxy(signature.args[i])(context, builder, value=args[i]).data
                   for i in range(3)]
            vi32, vi8 = ir.VectorType(ir.IntType(32), lanes), ir.VectorType(ir.IntType(8), 4 * lanes)
            a = builder.load(builder.bitcast(ptr[0], vi32.as_pointer()), align=1)  # numpy aligns to 16 only
            r = getattr(mk.isa, op)(builder, a, builder.load(builder.bitcast(ptr[1], vi8.as_pointer()), align=1),
                                    builder.load(builder.bitcast(ptr[2], vi8.as_pointer()), align=1),
                                    emulated=emulated)
            builder.store(r, builder.bitcast(ptr[0], vi32.as_pointer()), align=1)
            return context.get_dummy_value()
        return types.none(acc, u, s), codegen

    @njit
    def run(acc, u, s):
        dp(acc, u, s)

    rng = np.random.default_rng(bits)
    acc = rng.integers(-2**31, 2**31 - 1, lanes).astype(np.int32)
    acc[0] = 2**31 - 1  # wraps past the top
    if op == "dpbusd":
        u = rng.integers(0, 256, 4 * lanes).astype(np.uint8)
        s = rng.integers(-128, 128, 4 * lanes).astype(np.int8)
        u[:4], s[:4] = 255, 127
        prods = (u.astype(np.int64) * s).reshape(lanes, 4).sum(1)
    else:
        u = rng.integers(-2**15, 2**15, 2 * lanes).astype(np.int16)
        s = rng.integers(-2**15, 2**15, 2 * lanes).astype(np.int16)
        u[:2], s[:2] = 32767, 32767
        u[2:4], s[2:4] = -32768, -32768  # the one product pair whose sum leaves int32: 2**31
        prods = (u.astype(np.int64) * s).reshape(lanes, 2).sum(1)
    want = (acc.astype(np.int64) + prods + 2**31) % 2**32 - 2**31
    got = acc.copy()
    run(got, u.view(np.int8) if op == "dpwssd" else u, s.view(np.int8) if op == "dpwssd" else s)
    np.testing.assert_array_equal(got, want.astype(np.int32))
