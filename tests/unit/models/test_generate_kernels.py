"""The generator's decode path with int8 activations: fused sibling projections (q/k/v and
gate/up as one kernel call) and the Numba RMSNorm / RoPE / attention kernels give, token by
token, the logits the whole-sequence forward of the same deployment gives."""
from __future__ import annotations

import numpy as np
import pytest

import tdsl
from tdsl.backends.numba.generate import FP16_HEAD_BLAS_ROWS, Generator
from tdsl.package.layout import expected_tensors
from tdsl.package.reader import LoadedPackage, build_frozen_program
from tdsl.runtime.packing import pack

PARAMS = {"vocab": 64, "d": 64, "layers": 2, "heads": 4, "kv_heads": 2, "hidden": 128, "swiglu": False,
          "gated": True, "base": 500000.0, "eps": 1e-5}


def _package() -> LoadedPackage:
    from tdsl.models import zoo_path

    compiled = build_frozen_program(zoo_path("bitnet").read_text(encoding="utf-8"), entry="BitNetDecoder",
                                    params=PARAMS, pipeline="shape-infer,ternarize{policy=b158}", format="2bit")
    rng = np.random.default_rng(0)
    arrays = {}
    for key, spec in expected_tensors(compiled.module).items():
        if key.endswith("_packed"):
            arrays[key] = pack(rng.integers(-1, 2, (spec.shape[0], spec.shape[1] * 4), dtype=np.int8), "2bit")
        elif key.endswith("_scale"):
            arrays[key] = np.array(rng.uniform(0.05, 0.2), np.float32)
        elif len(spec.shape) == 1:
            arrays[key] = (1 + 0.2 * rng.standard_normal(spec.shape)).astype(np.float32)
        else:
            arrays[key] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return LoadedPackage(tdsl.__path__[0], {"freeze": {"format": "2bit"}}, compiled, arrays)



def _with_biases(run, seed: int):
    """`run` with random biases on gate and up (b1.58 has none), to check where they are added."""
    from tdsl.backends.numba.plan import Kernel

    rng = np.random.default_rng(seed)
    for step in run.plan.steps:
        if step.kind is Kernel.LINEAR_TERNARY and step.weights["packed"].shape[0] == PARAMS["hidden"]:
            step.weights["bias"] = rng.standard_normal(PARAMS["hidden"]).astype(np.float32)
    return run

def test_fused_decode_steps_give_the_full_forwards_logits() -> None:
    run = _package().deploy()
    gen = Generator(run, capacity=4)
    fused = [h for h in gen.handlers.values() if getattr(h, "__name__", "") == "run"]
    assert len(fused) >= 2 * 5  # q, k, v and gate, up of every block (plus attention handlers)
    ids = np.random.default_rng(1).integers(0, 64, (1, 11)).astype(np.int32)
    full = run(ids)
    logits = [gen.prefill(ids[:, :3])] + [gen.decode_step(ids[:, i:i + 1]) for i in range(3, 11)]
    np.testing.assert_allclose(np.concatenate(logits, axis=1), full, rtol=1e-4, atol=1e-4)


def test_auto_reads_the_head_at_fp16_only_when_that_rounds_nothing() -> None:
    """The package stores the head at fp16: "auto" reads those halves (half the float32 bytes)
    and the logits are the float32 head's up to summation order; a head that fp16 would round
    stays float32."""
    pkg = _package()
    ids = np.random.default_rng(2).integers(0, 64, (1, 7)).astype(np.int32)
    auto, flt = Generator(pkg.deploy(), capacity=8), Generator(pkg.deploy(), capacity=8, head="float")
    assert auto.head == "fp16" and flt.head == "float"
    assert auto.head_bytes == 64 * 64 * 2 and flt.head_bytes == 64 * 64 * 4
    np.testing.assert_allclose(auto.prefill(ids), flt.prefill(ids), rtol=1e-5, atol=1e-5)
    # a prompt of FP16_HEAD_BLAS_ROWS tokens or more: the same float32 BLAS product, the same bits
    longer = np.random.default_rng(4).integers(0, 64, (1, FP16_HEAD_BLAS_ROWS)).astype(np.int32)
    np.testing.assert_array_equal(auto.prefill(longer), flt.prefill(longer))
    pkg.arrays["lm_head.weight"] = pkg.arrays["lm_head.weight"].astype(np.float32) + np.float32(1e-4)
    assert Generator(pkg.deploy(), capacity=8).head == "float"
    forced = Generator(pkg.deploy(), capacity=8, head="fp16")  # rounds the weights, prefill included
    rounded = forced.prefill(longer)
    exact = Generator(pkg.deploy(), capacity=8, head="float").prefill(longer)
    assert forced.head == "fp16" and not np.array_equal(rounded, exact)
    np.testing.assert_allclose(rounded, exact, rtol=1e-2, atol=1e-2)


def test_the_int8_head_decodes_what_it_prefills() -> None:
    """head="int8": in decode the final norm writes the codes the head reads (rms_norm_quant);
    token by token the logits are those of the whole prompt through the same int8 head, and
    they differ from the exact head's by the weight and activation roundings only."""
    pkg = _package()
    ids = np.random.default_rng(3).integers(0, 64, (1, 9)).astype(np.int32)
    gen = Generator(pkg.deploy(), capacity=12, head="int8")
    assert gen.head == "int8" and gen.head_bytes == 64 * 256 + 4 * 64  # rows padded to 4 planes of 64
    # 4 norms per block feed ternary projections (attention in, o, MLP in, down) and the last the head
    assert len(gen._quantizing_norms) == 2 * 4 + 1
    whole = gen.prefill(ids)
    steps = np.concatenate([gen.prefill(ids[:, :2])] + [gen.decode_step(ids[:, i:i + 1]) for i in range(2, 9)], 1)
    np.testing.assert_allclose(steps, whole, rtol=1e-4, atol=1e-4)
    exact = Generator(pkg.deploy(), capacity=12, head="float").prefill(ids)
    assert np.abs(whole - exact).max() <= 0.03 * np.abs(exact).max()
    assert (whole.argmax(-1) == exact.argmax(-1)).mean() >= 0.8


def test_prefill_runs_every_projection_on_the_gemm_micro_kernels() -> None:
    """A prompt of LINEAR_MIN_ROWS tokens or more runs the projections on GEMM micro-kernels,
    whose weight panels are built on first use: on AVX2 and AVX-512 VNNI `rows_int8` (sibling groups
    as one call on their fused panels, the rest per step, with the path's panel layout); decode
    steps (one row) never build panels."""
    from tdsl.backends.numba.plan import Kernel
    from tdsl.runtime import conv_int8, rows_int8
    from tdsl.runtime.cpu_features import kernel_path

    run = _package().deploy()
    path = kernel_path(run.path)
    min_rows = conv_int8.LINEAR_MIN_ROWS.get(path)
    ternary = {id(s) for s in run.plan.steps if s.kind is Kernel.LINEAR_TERNARY}
    gen = Generator(run, capacity=(min_rows or 8) + 4)
    gen.prefill(np.zeros((1, 1), np.int32))
    for _ in range(3):
        gen.decode_step(np.zeros((1, 1), np.int32))
    assert not ternary & set(run._panels) and len(ternary) == 2 * 7
    assert len(gen._fused) == 2 * 2 and all(f["rows"] is None for f in gen._fused)  # q/k/v, gate/up
    gen.prefill(np.zeros((1, min_rows or 8), np.int32))
    if path in ("avx2", "vnni"):  # o and down per step, the 2 sibling groups of each block fused
        assert len(ternary & set(run._panels)) == 2 * 2
        assert all(isinstance(run._panels[i], rows_int8.RowPanels) and run._panels[i].path == path
                   for i in ternary & set(run._panels))
        assert all(isinstance(f["rows"], rows_int8.RowPanels) and f["rows"].path == path for f in gen._fused)
    else:  # the portable path has no micro-kernel: there every row count runs gemm's row kernels
        assert ternary <= set(run._panels) if min_rows else not run._panels


def test_fused_prefill_is_the_step_by_step_prefill_bit_for_bit(monkeypatch) -> None:
    """Siblings as one call over many rows (rows quantised once, concatenated panels, every
    member's bias added in the call, relu2 on gate's slice after it) give the bits of each
    projection run alone."""

    pkg = _package()
    ids = np.random.default_rng(5).integers(0, 64, (1, 13)).astype(np.int32)

    def deployed():  # b1.58 has no biases: give gate and up some, to check where they are added
        return _with_biases(pkg.deploy(), seed=6)

    fused = Generator(deployed(), capacity=16)
    want = fused.prefill(ids)
    monkeypatch.setattr(Generator, "_fuse_siblings", lambda self, plan: None)
    alone = Generator(deployed(), capacity=16)
    assert not alone._fused and fused._fused
    np.testing.assert_array_equal(alone.prefill(ids), want)


def test_a_prefill_takes_fewer_threads_while_other_processes_hold_cores(monkeypatch) -> None:
    """As a deployment call: the thread count `threads_for_call` gives holds for every step of
    the forward, and the configured count comes back after it."""
    import numba

    from tdsl.backends.numba import executor

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    run = _package().deploy()
    gen = Generator(run, capacity=16)
    seen = []
    step = next(s for s in run.plan.steps if id(s) in gen.handlers)
    inner = gen.handlers[id(step)]
    gen.handlers[id(step)] = lambda st, ins, y: (seen.append(numba.get_num_threads()), inner(st, ins, y))
    monkeypatch.setattr(executor, "threads_for_call", lambda configured: 1)
    numba.set_num_threads(2)
    gen.prefill(np.zeros((1, 9), np.int32))
    assert seen == [1] and numba.get_num_threads() == 2


@pytest.mark.parametrize("head, batch", [("auto", 1), ("int8", 1), ("float", 2)])
def test_prepared_decode_steps_are_the_handlers_bit_for_bit(head: str, batch: int, monkeypatch) -> None:
    """A decode step runs closures with its arrays bound (`Generator._prepare`: codes reused from
    step to step, the cache's transposed keys, kernels called directly): the bits of the same
    step through the handlers, past the cache's capacity, with biases and gate's activation in
    the sibling epilogue."""

    pkg = _package()

    def deployed():
        return _with_biases(pkg.deploy(), seed=7)

    ids = np.random.default_rng(8).integers(0, 64, (batch, 12)).astype(np.int32)

    def decode(gen: Generator) -> np.ndarray:
        out = [gen.prefill(ids[:, :3])] + [gen.decode_step(ids[:, i:i + 1]) for i in range(3, 12)]
        return np.concatenate(out, axis=1)

    prepared = Generator(deployed(), capacity=4, head=head)
    want = decode(prepared)
    assert len(prepared._decode_calls) == 1 and prepared.cache.keys_t[0].shape[2] > 4  # it grew
    monkeypatch.setattr(Generator, "_prepare", lambda self, bound, ctx: None)
    handlers = Generator(deployed(), capacity=4, head=head)
    np.testing.assert_array_equal(decode(handlers).view(np.int32), want.view(np.int32))
    assert not handlers._decode_calls or all(c is None for c in handlers._decode_calls.values())


@pytest.mark.parametrize("head", ["float", "fp16", "int8"])
def test_prefill_of_the_last_rows_only_gives_the_full_prefills_last_logits(head) -> None:
    """prefill(last_only=True), what generate runs: the head on each sequence's last row only,
    the same logits as the whole prefill's last row (and the same cache for the next step)."""
    pkg = _package()
    ids = np.random.default_rng(5).integers(0, 64, (2, 9)).astype(np.int32)
    gen = Generator(pkg.deploy(), capacity=12, head=head)
    whole = gen.prefill(ids)
    after_whole = gen.decode_step(ids[:, :1])
    last = gen.prefill(ids, last_only=True)
    assert last.shape == (2, 1, whole.shape[-1])
    # the fp16 head runs its float BLAS form on many rows, its GEMV on few: the sums' order differs
    np.testing.assert_allclose(last[:, 0], whole[:, -1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gen.decode_step(ids[:, :1]), after_whole, rtol=1e-5, atol=1e-5)
    assert gen.generate(ids, 1).tokens == [[int(t)] for t in whole[:, -1].argmax(-1)]


def test_a_prepared_decode_step_refuses_an_id_outside_the_table() -> None:
    """The decode closure's row copy (not the composite's numpy) still names a bad id, and the
    next good step decodes as if the bad one had not been fed."""
    gen = Generator(_package().deploy(), capacity=16)
    gen.prefill(np.array([[1, 2, 3]], np.int32))
    want = Generator(_package().deploy(), capacity=16)
    want.prefill(np.array([[1, 2, 3]], np.int32))
    for bad in (64, -1):
        with pytest.raises(tdsl.TdslError, match=f"embedding: id {bad} is outside the table of 64 rows"):
            gen.decode_step(np.array([[bad]], np.int32))
    assert gen._decode_calls  # the prepared closures ran
    np.testing.assert_array_equal(gen.decode_step(np.array([[5]], np.int32)), want.decode_step(np.array([[5]], np.int32)))
