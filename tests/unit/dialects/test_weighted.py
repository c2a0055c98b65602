"""The `WeightedOp` trait: every conv/linear at every level carries it, its accessors read the
op's operands by role, and passes and storage find weighted ops through it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from xdsl.dialects.builtin import TensorType, f32

from tdsl.dialects import kern, tern
from tdsl.dialects import tdsl as t
from tdsl.dialects.kern import KERN
from tdsl.dialects.tdsl import TDSL
from tdsl.dialects.tern import TERN, PackedTensorType, i2
from tdsl.dialects.context import KINDS, op_at
from tdsl.dialects.weighted import LEVELS, WeightedOp, weighted

EXPECTED = {
    t.Conv2dOp: ("conv2d", "float"), t.LinearOp: ("linear", "float"),
    tern.TernConv2dOp: ("conv2d", "trits"), tern.TernLinearOp: ("linear", "trits"),
    tern.PackedConv2dOp: ("conv2d", "packed"), tern.PackedLinearOp: ("linear", "packed"),
    kern.Conv2dOp: ("conv2d", "kernel"), kern.LinearOp: ("linear", "kernel"),
    t.CONVS["conv_transpose2d"]: ("conv_transpose2d", "float"),
    tern.TERN_CONVS["conv_transpose2d"]: ("conv_transpose2d", "trits"),
    tern.PACKED_CONVS["conv_transpose2d"]: ("conv_transpose2d", "packed"),
    kern.CONVS["conv_transpose2d"]: ("conv_transpose2d", "kernel"),
}
ROOT = Path(__file__).resolve().parents[3] / "tdsl"


def test_exactly_the_convs_and_linears_carry_the_trait() -> None:
    """Every convolution kind (`CONV_KINDS`) has its op at each level, made from one definition."""
    carrying = {op: (op.get_trait(WeightedOp).kind, op.get_trait(WeightedOp).level)
                for d in (TDSL, TERN, KERN) for op in d.operations if op.has_trait(WeightedOp)}
    assert carrying == EXPECTED
    assert {(k, lv): op_at(k, lv) for k in KINDS for lv in LEVELS} == {v: k for k, v in EXPECTED.items()}
    assert set(KINDS) == {"conv2d", "conv_transpose2d", "linear"}
    with pytest.raises(KeyError, match="conv3d"):
        op_at("conv3d", "float")


def _block_values():
    from xdsl.ir import Block

    x4, w4 = TensorType(f32, [2, 3, 8, 8]), TensorType(f32, [4, 3, 3, 3])
    block = Block(arg_types=[x4, w4, TensorType(f32, [4]), TensorType(f32, [4]), TensorType(i2, [4, 3, 3, 3]),
                             PackedTensorType([4, 3, 3, 3], "2bit"), TensorType(f32, [2, 12]), TensorType(f32, [4, 12])])
    return block.args


def test_accessors_read_operands_by_role() -> None:
    x, w, b, s, trits, packed, x2, w2 = _block_values()
    geometry = {"stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
    ops = [
        t.Conv2dOp(x, w, b, **geometry), t.LinearOp(x2, w2, None),
        tern.TernConv2dOp(x, trits, s, b, **geometry), tern.PackedConv2dOp(x, packed, s, None, **geometry),
        kern.Conv2dOp(x, packed, scale=s, bias=b, precision="ternary", format="2bit", **geometry),
        kern.LinearOp(x2, w2, precision="fp32"),
    ]
    for op in ops:
        trait = weighted(op)
        assert trait is not None and trait.weight(op) is op.weight
        assert trait.bias(op) is op.bias
        assert trait.scale(op) is (None if trait.level == "float" else op.scale)
        assert trait.geometry(op) == ({} if trait.kind == "linear" else
                                      {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 1})
    assert weighted(t.ReluOp(x)) is None
    transposed = kern.CONVS["conv_transpose2d"](x, packed, scale=s, precision="ternary", format="2bit",
                                                output_padding=(1, 0), **geometry)
    assert weighted(transposed).geometry(transposed) == {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1),
                                                         "groups": 1, "output_padding": (1, 0)}


def test_passes_and_storage_name_no_weighted_class_in_an_isinstance() -> None:
    """The walks that had `isinstance` unions of conv/linear classes (fuse, pack, the precision
    policy, the storage layout) ask for the trait now; a new union there fails this test."""
    classes = {cls.__name__ for cls in EXPECTED}
    for rel in ("passes/fuse.py", "passes/pack.py", "passes/precision_policy.py", "passes/ternarize.py",
                "backends/torch/freeze.py"):
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                named = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", None)
                         for n in ast.walk(node.args[1])}
                assert not named & classes, f"{rel}:{node.lineno}: isinstance on {sorted(named & classes)}"
