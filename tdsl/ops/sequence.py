"""The sequence-model composites (issue 15): reference, torch expression and ONNX builder
of each; `tdsl.ops.composite.COMPOSITES` holds their rows.

The references are numpy (`tdsl.runtime.attention` for rotary embedding and attention, which
the key/value-cached decoder shares); torch expressions call `F.*` or the helpers of
`tdsl.backends.torch.sequence` (as `_rt.*`); ONNX builders compose standard nodes.
Imports numpy only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tdsl.dialects import tdsl as t
from tdsl.dialects.locations import loc_of
from tdsl.dialects.shapes import dims_of
from tdsl.errors import TdslError
from tdsl.runtime import attention as A

# ----------------------------------------------------------------- references


def rms_norm(op: t.RmsNormOp, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + op.eps.value.data) * weight


def embedding(op: t.EmbeddingOp, ids: np.ndarray, weight: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise TdslError(f"embedding: id {bad} is outside the table of {weight.shape[0]} rows", loc_of(op))
    return weight[ids]


def positions(op: t.PositionsOp, ids: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.arange(ids.shape[-1], dtype=np.int32), ids.shape)


def permute(op: t.PermuteOp, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, op.order())


def transpose(op: t.TransposeOp, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, op.order(x.ndim))


def _axis(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def slice_(op: t.SliceOp, x: np.ndarray) -> np.ndarray:
    axis = _axis(op.dim.value.data, x.ndim)
    bounds = op.bounds(x.shape[axis])
    if bounds is None:
        raise TdslError(f"slice: [{op.start.value.data}, {op.end.value.data}) is not a range of dim {axis} "
                        f"of an input of shape {x.shape}", loc_of(op))
    return x[(slice(None),) * axis + (slice(*bounds),)]


def concat(op: t.ConcatOp, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([a, b], axis=op.dim.value.data)


def rope(op: t.RotaryOp, x: np.ndarray) -> np.ndarray:
    return A.rope(x, op.heads.value.data, op.base.value.data)


def attention(op: t.AttentionOp, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    return A.attention(q, k, v, op.heads.value.data, op.kv_heads.value.data, op.is_causal)


# ----------------------------------------------------------------- torch


def rms_norm_torch(op: t.RmsNormOp, exprs: list[str]) -> str:
    x, weight = exprs
    return f"F.rms_norm({x}, ({weight}.shape[0],), {weight}, eps={op.eps.value.data!r})"


def embedding_torch(op: t.EmbeddingOp, exprs: list[str]) -> str:
    ids, weight = exprs
    return f"F.embedding({ids}.long(), {weight})"


def positions_torch(op: t.PositionsOp, exprs: list[str]) -> str:
    return f"_rt.positions({exprs[0]})"


def permute_torch(op: t.PermuteOp, exprs: list[str]) -> str:
    return f"{exprs[0]}.permute({tuple(op.order())!r})"


def transpose_torch(op: t.TransposeOp, exprs: list[str]) -> str:
    return f"{exprs[0]}.transpose({op.dim0.value.data}, {op.dim1.value.data})"


def slice_torch(op: t.SliceOp, exprs: list[str]) -> str:
    d, s, e = op.dim.value.data, op.start.value.data, op.end.value.data
    index = f"{':, ' * d}{s}:{e}" if d >= 0 else f"..., {s}:{e}{', :' * (-d - 1)}"
    return f"{exprs[0]}[{index}]"


def concat_torch(op: t.ConcatOp, exprs: list[str]) -> str:
    return f"torch.cat(({exprs[0]}, {exprs[1]}), dim={op.dim.value.data})"


def rope_torch(op: t.RotaryOp, exprs: list[str]) -> str:
    return f"_rt.rope({exprs[0]}, {op.heads.value.data}, {op.base.value.data!r})"


def attention_torch(op: t.AttentionOp, exprs: list[str]) -> str:
    q, k, v = exprs
    return (f"_rt.attention({q}, {k}, {v}, {op.heads.value.data}, {op.kv_heads.value.data}, "
            f"causal={op.is_causal})")


# ----------------------------------------------------------------- ONNX


def _i64(g: Any, values: list[int], hint: str) -> str:
    return g.constant(np.array(values, np.int64), hint)


def _f32(g: Any, value: float, hint: str) -> str:
    return g.constant(np.array(value, np.float32), hint)


def _reduce_mean_last(g: Any, x: str, hint: str) -> str:
    if g.opset >= 18:
        return g.node("ReduceMean", [x, _i64(g, [-1], "axes_last")], hint, keepdims=1)
    return g.node("ReduceMean", [x], hint, axes=[-1], keepdims=1)


def rms_norm_onnx(g: Any, op: t.RmsNormOp, names: list[str], hint: str) -> str:
    x, weight = names
    ms = _reduce_mean_last(g, g.node("Mul", [x, x], hint + "_sq"), hint + "_ms")
    rms = g.node("Sqrt", [g.node("Add", [ms, _f32(g, op.eps.value.data, hint + "_eps")], hint + "_eps")],
                 hint + "_rms")
    return g.node("Mul", [g.node("Div", [x, rms], hint + "_norm"), weight], hint)


def embedding_onnx(g: Any, op: t.EmbeddingOp, names: list[str], hint: str) -> str:
    ids, weight = names
    return g.node("Gather", [weight, ids], hint, axis=0)


def _last_dim_range(g: Any, x: str, hint: str) -> str:
    """0..T-1 (int64) where T is the last dim of `x`."""
    size = g.node("Shape", [x], hint + "_shape", start=-1)
    length = g.node("Squeeze", [size, _i64(g, [0], "axes_0")], hint + "_len")
    return g.node("Range", [g.constant(np.array(0, np.int64), "zero_i64"), length,
                            g.constant(np.array(1, np.int64), "one_i64")], hint + "_range")


def positions_onnx(g: Any, op: t.PositionsOp, names: list[str], hint: str) -> str:
    steps = g.node("Cast", [_last_dim_range(g, names[0], hint)], hint + "_i32", to=6)  # INT32
    return g.node("Expand", [steps, g.node("Shape", [names[0]], hint + "_full")], hint)


def permute_onnx(g: Any, op: t.PermuteOp, names: list[str], hint: str) -> str:
    return g.node("Transpose", [names[0]], hint, perm=list(op.order()))


def transpose_onnx(g: Any, op: t.TransposeOp, names: list[str], hint: str) -> str:
    dims = dims_of(op.input.type)
    if dims is None:
        raise g.refuse(op, "transpose needs an input of known rank")
    return g.node("Transpose", [names[0]], hint, perm=op.order(len(dims)))


def slice_onnx(g: Any, op: t.SliceOp, names: list[str], hint: str) -> str:
    return g.node("Slice", [names[0], _i64(g, [op.start.value.data], "start"), _i64(g, [op.end.value.data], "end"),
                            _i64(g, [op.dim.value.data], "axes")], hint)


def concat_onnx(g: Any, op: t.ConcatOp, names: list[str], hint: str) -> str:
    return g.node("Concat", names, hint, axis=op.dim.value.data)


def _heads_first(g: Any, x: str, heads: int, hint: str) -> str:
    """[N, T, H*Dh] -> [N, H, T, Dh]."""
    split = g.node("Reshape", [x, _i64(g, [0, 0, heads, -1], f"heads_{heads}")], hint + "_split")
    return g.node("Transpose", [split], hint + "_bhtd", perm=[0, 2, 1, 3])


def _head_dim(op: t.RotaryOp | t.AttentionOp, value: Any, heads: int, g: Any) -> int:
    dims = dims_of(value.type)
    if dims is None or dims[-1] is None:
        raise g.refuse(op, "the feature dim (heads * head_dim) must be static")
    return int(dims[-1]) // heads


def rope_onnx(g: Any, op: t.RotaryOp, names: list[str], hint: str) -> str:
    heads = op.heads.value.data
    dh = _head_dim(op, op.input, heads, g)
    half = dh // 2
    inv_freq = (1.0 / (op.base.value.data ** (np.arange(0, dh, 2, dtype=np.float64) / dh))).astype(np.float32)
    seq = g.node("Transpose", [names[0]], hint + "_tn", perm=[1, 0, 2])  # [T, N, F]: T is dim 0
    size = g.node("Shape", [seq], hint + "_shape", start=0, end=1)
    length = g.node("Squeeze", [size, _i64(g, [0], "axes_0")], hint + "_len")
    steps = g.node("Range", [g.constant(np.array(0, np.int64), "zero_i64"), length,
                             g.constant(np.array(1, np.int64), "one_i64")], hint + "_range")
    pos = g.node("Cast", [g.node("Unsqueeze", [steps, _i64(g, [1], "axes_1")], hint + "_col")], hint + "_pos",
                 to=1)  # FLOAT
    freqs = g.constant(np.concatenate([inv_freq, inv_freq])[None, :], hint + "_freq")
    angles = g.node("Mul", [pos, freqs], hint + "_angles")  # [T, Dh]
    # [T, Dh] -> [1, T, 1, Dh] against x as [N, T, H, Dh]
    shape4 = _i64(g, [1, -1, 1, dh], f"rope_table_{dh}")
    cos = g.node("Reshape", [g.node("Cos", [angles], hint + "_cos0"), shape4], hint + "_cos")
    sin = g.node("Reshape", [g.node("Sin", [angles], hint + "_sin0"), shape4], hint + "_sin")
    x4 = g.node("Reshape", [names[0], _i64(g, [0, 0, heads, dh], f"heads_{heads}x{dh}")], hint + "_x4")
    lo = g.node("Slice", [x4, _i64(g, [0], "start0"), _i64(g, [half], f"half_{half}"), _i64(g, [-1], "axes_last")],
                hint + "_lo")
    hi = g.node("Slice", [x4, _i64(g, [half], f"half_{half}"), _i64(g, [dh], f"end_{dh}"),
                          _i64(g, [-1], "axes_last")], hint + "_hi")
    rotated = g.node("Concat", [g.node("Neg", [hi], hint + "_neg"), lo], hint + "_rot", axis=-1)
    out = g.node("Add", [g.node("Mul", [x4, cos], hint + "_xc"), g.node("Mul", [rotated, sin], hint + "_rs")],
                 hint + "_4d")
    return g.node("Reshape", [out, _i64(g, [0, 0, heads * dh], f"merge_{heads * dh}")], hint)


def attention_onnx(g: Any, op: t.AttentionOp, names: list[str], hint: str) -> str:
    heads, kv_heads = op.heads.value.data, op.kv_heads.value.data
    dh = _head_dim(op, op.query, heads, g)
    q = _heads_first(g, names[0], heads, hint + "_q")
    k = _heads_first(g, names[1], kv_heads, hint + "_k")
    v = _heads_first(g, names[2], kv_heads, hint + "_v")
    if heads != kv_heads:  # [N, Hkv, S, Dh] -> [N, Hkv, G, S, Dh] -> [N, H, S, Dh]
        group = heads // kv_heads
        k, v = (g.node("Reshape", [g.node("Expand", [g.node("Unsqueeze", [x, _i64(g, [2], "axes_2")], f"{x}_5d"),
                                                     _i64(g, [1, 1, group, 1, 1], f"group_{group}")], f"{x}_rep"),
                                   _i64(g, [0, heads, -1, dh], f"kv_{heads}x{dh}")], f"{x}_gqa") for x in (k, v))
    kt = g.node("Transpose", [k], hint + "_kt", perm=[0, 1, 3, 2])
    scores = g.node("Mul", [g.node("MatMul", [q, kt], hint + "_qk"), _f32(g, 1.0 / float(np.sqrt(dh)), f"scale_{dh}")],
                    hint + "_scores")
    if op.is_causal:  # key j is visible to query i when j <= i + S - T
        qi = g.node("Unsqueeze", [_last_dim_range(g, g.node("Transpose", [names[0]], hint + "_qt", perm=[0, 2, 1]),
                                                  hint + "_qi"), _i64(g, [1], "axes_1")], hint + "_qcol")
        kj = _last_dim_range(g, g.node("Transpose", [names[1]], hint + "_kt2", perm=[0, 2, 1]), hint + "_kj")
        t_len = g.node("Shape", [names[0]], hint + "_t", start=1, end=2)
        s_len = g.node("Shape", [names[1]], hint + "_s", start=1, end=2)
        shift = g.node("Sub", [s_len, t_len], hint + "_shift")
        hidden = g.node("Greater", [kj, g.node("Add", [qi, shift], hint + "_limit")], hint + "_hidden")
        scores = g.node("Where", [hidden, _f32(g, float("-inf"), "neg_inf"), scores], hint + "_masked")
    probs = g.node("Softmax", [scores], hint + "_probs", axis=-1)
    out = g.node("Transpose", [g.node("MatMul", [probs, v], hint + "_pv")], hint + "_bthd", perm=[0, 2, 1, 3])
    return g.node("Reshape", [out, _i64(g, [0, 0, heads * dh], f"merge_{heads * dh}")], hint)
