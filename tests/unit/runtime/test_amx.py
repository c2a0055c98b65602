"""The AMX tile kernel (tdsl.runtime.amx): compiled for Sapphire Rapids on any machine, run and
compared with numpy bit for bit where the CPU has AMX-INT8 and Linux grants the tile data."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tdsl.runtime import amx, isa
from tdsl.runtime import microkernels as mk

HAS_AMX = isa.has("amx_int8") and isa.amx_permission()


def test_the_block_compiles_for_sapphire_rapids_to_tile_instructions():
    asm = amx.assembly("sapphirerapids")
    counts = {op: len(re.findall(rf"\b{op}\b", asm)) for op in ("ldtilecfg", "tileloadd", "tdpbusd", "tilestored",
                                                                  "tilezero", "tilerelease")}
    # 2 A + 2 B tile loads and 4 products per k step (one loop body), 4 accumulators stored
    assert counts == {"ldtilecfg": 1, "tileloadd": 4, "tdpbusd": 4, "tilestored": 4, "tilezero": 4, "tilerelease": 1}


def test_tile_config_and_vnni_panel_layout():
    cfg = amx.tile_config()
    assert cfg[0] == 1 and (cfg[16:32].view(np.uint16)[:8] == 64).all() and (cfg[48:56] == 16).all()
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (32, 128)).astype(np.int8)
    p = amx.vnni4x16_panels(w)
    assert p.shape == (2, 32, 64)
    # panel j, row r, byte 4*col + kk = w[16j + col, 4r + kk]
    assert p[1, 5, 4 * 3 + 2] == w[16 + 3, 4 * 5 + 2]


def test_the_amx_row_runs_gemms_and_convs_and_is_picked_only_where_it_runs():
    row = mk.by_name("amx")
    assert row.isa == "amx_int8" and row.drivers == ("gemm", "conv")
    assert (mk.select().name == "amx") == HAS_AMX
    assert row.available() == HAS_AMX
    with isa.emulate("amx_int8"):  # the tests' way to run its drivers without AMX: it then counts as available
        assert row.available() and mk.select().name == "amx"
        assert mk.k2x32_row().name != "amx" and mk.k2x32_row("int16").weights == "int16"
    assert row.available() == HAS_AMX


@pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX-INT8 (amx_tile/amx_int8 in /proc/cpuinfo) "
                    "or Linux refused the tile data: compile-only here")
def test_amx_gemm_equals_numpy_bit_for_bit():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (64, 256)).astype(np.uint8)
    w = rng.integers(-1, 2, (96, 256)).astype(np.int8)
    np.testing.assert_array_equal(amx.gemm(a, w), a.astype(np.int64) @ w.T.astype(np.int64))


@pytest.mark.skipif(HAS_AMX, reason="this CPU has AMX: the refusal applies elsewhere")
def test_without_amx_the_kernel_refuses_to_run():
    from tdsl.errors import TdslError

    with pytest.raises(TdslError, match="AMX"):
        amx.gemm_function()
