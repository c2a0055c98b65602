"""The tdsl dialect: shape rules, verifiers, and print/parse round trips."""
from __future__ import annotations

import shutil
import subprocess
from io import StringIO

import pytest
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    DenseIntOrFPElementsAttr,
    FileLineColLoc,
    IntAttr,
    ModuleOp,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    UnrankedTensorType,
    IntegerType,
    f16,
    f32,
)
from xdsl.ir import Block
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from tdsl.dialects import tdsl as t
from tdsl.dialects.context import make_context

Q = DYNAMIC_INDEX
i2 = IntegerType(2)


def tensor(*dims: int, el=f32) -> TensorType:
    return TensorType(el, list(dims))


def show(op, **kw) -> str:
    s = StringIO()
    Printer(stream=s, **kw).print_op(op)
    return s.getvalue()


def values(*types):
    return Block(arg_types=types).args


CASES = [
    # (builder over block args, arg types, expected result)
    (lambda x, w, b: t.LinearOp(x, w, b), (tensor(Q, 256), tensor(10, 256), tensor(10)), tensor(Q, 10)),
    (lambda x, w: t.LinearOp(x, w), (tensor(2, 5, 8), tensor(4, 8)), tensor(2, 5, 4)),
    (lambda x, w: t.LinearOp(x, w), (tensor(2, 8, el=f16), tensor(4, 8, el=f16)), tensor(2, 4, el=f16)),
    (lambda a, b: t.MatmulOp(a, b), (tensor(Q, 3, 4), tensor(4, 5)), tensor(Q, 3, 5)),
    (lambda a, b: t.MatmulOp(a, b), (tensor(7, 1, 3, 4), tensor(6, 4, 5)), tensor(7, 6, 3, 5)),
    (lambda x, w: t.TernaryMatmulOp(x, w), (tensor(Q, 8), tensor(4, 8, el=i2)), tensor(Q, 4)),
    (lambda x, w: t.Conv2dOp(x, w), (tensor(Q, 3, 32, 32), tensor(8, 3, 3, 3)), tensor(Q, 8, 30, 30)),
    (lambda x, w, b: t.Conv2dOp(x, w, b, stride=(2, 2), padding=(3, 3)),
     (tensor(1, 3, 224, 224), tensor(64, 3, 7, 7), tensor(64)), tensor(1, 64, 112, 112)),
    (lambda x, w: t.Conv2dOp(x, w, padding=(2, 2), dilation=(2, 2)), (tensor(1, 4, 9, 9), tensor(4, 4, 3, 3)),
     tensor(1, 4, 9, 9)),
    (lambda x, w: t.Conv2dOp(x, w, stride=(2, 1), padding=(1, 1), groups=32),
     (tensor(Q, 32, 15, 15), tensor(32, 1, 3, 3)), tensor(Q, 32, 8, 15)),
    (lambda x, w: t.Conv2dOp(x, w, groups=2), (tensor(Q, 4, Q, Q), tensor(6, 2, 1, 1)), tensor(Q, 6, Q, Q)),
    (lambda x, m, v, g, b: t.BatchNormOp(x, m, v, g, b),
     (tensor(Q, 8, 4, 4), tensor(8), tensor(8), tensor(8), tensor(8)), tensor(Q, 8, 4, 4)),
    (lambda x: t.ReluOp(x), (tensor(Q, 4),), tensor(Q, 4)),
    (lambda x: t.SoftmaxOp(x, dim=1), (tensor(2, 4),), tensor(2, 4)),
    (lambda x: t.DropoutOp(x, p=0.1), (tensor(2, 4),), tensor(2, 4)),
    (lambda a, b: t.AddOp(a, b), (tensor(Q, 4), tensor(4)), tensor(Q, 4)),
    (lambda a, b: t.MulOp(a, b), (tensor(Q, 1, 5), tensor(3, 1)), tensor(Q, 3, 5)),
    (lambda a, b: t.SubOp(a, b), (tensor(Q, 4), tensor(8, 1)), tensor(8, 4)),
    (lambda x: t.MaxPool2dOp(x, (2, 2)), (tensor(Q, 8, 32, 31),), tensor(Q, 8, 16, 15)),
    (lambda x: t.AvgPool2dOp(x, (3, 3), (2, 2), (1, 1)), (tensor(1, 8, 112, 112),), tensor(1, 8, 56, 56)),
    (lambda x: t.AdaptiveAvgPool2dOp(x, (1, 1)), (tensor(Q, 512, 7, 7),), tensor(Q, 512, 1, 1)),
    (lambda x: t.FlattenOp(x), (tensor(Q, 8, 2, 2),), tensor(Q, 32)),
    (lambda x: t.FlattenOp(x, 0, 1), (tensor(Q, 8, 2),), tensor(Q, 2)),
    (lambda x: t.ReshapeOp(x, (-1, 32)), (tensor(4, 8, 2, 2),), tensor(4, 32)),
    (lambda x: t.ReshapeOp(x, (-1, 32)), (tensor(Q, 8, 2, 2),), tensor(Q, 32)),
]


@pytest.mark.parametrize("build, arg_types, expected", CASES)
def test_shape_rule(build, arg_types, expected) -> None:
    op = build(*values(*arg_types))
    assert isinstance(op.output.type, UnrankedTensorType)
    assert op.infer_result_type() == expected


MISMATCHES = [
    (lambda x, w: t.LinearOp(x, w), (tensor(Q, 512), tensor(1000, 256)),
     "linear: input has 512 features but weight expects 256 (weight is 1000x256)"),
    (lambda x, w: t.Conv2dOp(x, w), (tensor(Q, 4, 8, 8), tensor(8, 3, 3, 3)),
     "conv2d: input has 4 channels but weight expects 3 (weight is 8x3x3x3, groups=1)"),
    (lambda x, w: t.Conv2dOp(x, w), (tensor(Q, 3, 2, 2), tensor(8, 3, 3, 3)),
     "conv2d: kernel 3x3 (dilation 1x1) does not fit input 2x2 with padding 0x0"),
    (lambda a, b: t.AddOp(a, b), (tensor(Q, 4), tensor(5)),
     "add: cannot broadcast operands of shapes ?x4 and 5 (dim -1: 4 vs 5)"),
    (lambda a, b: t.MatmulOp(a, b), (tensor(3, 4), tensor(5, 6)),
     "matmul: lhs has 4 columns but rhs has 5 rows (lhs is 3x4, rhs is 5x6)"),
    (lambda x: t.ReshapeOp(x, (-1, 5)), (tensor(2, 3),),
     "reshape: cannot reshape 2x3 (6 elements) to [-1, 5]: 6 is not divisible by 5"),
    (lambda x: t.ReshapeOp(x, (4, 2)), (tensor(2, 3),),
     "reshape: cannot reshape 2x3 (6 elements) to [4, 2] (8 elements)"),
    (lambda x, m, v, g, b: t.BatchNormOp(x, m, v, g, b),
     (tensor(Q, 8, 4), tensor(4), tensor(8), tensor(8), tensor(8)),
     "batch_norm: input has 8 channels but mean has 4 elements"),
    (lambda x: t.MaxPool2dOp(x, (4, 4)), (tensor(Q, 8, 3, 3),),
     "max_pool2d: kernel 4x4 does not fit input 3x3 with padding 0x0"),
    (lambda x: t.ReluOp(x), (UnrankedTensorType(f32),),
     "relu: input has unranked type tensor<*xf32>; its shape is unknown"),
]


@pytest.mark.parametrize("build, arg_types, message", MISMATCHES)
def test_shape_rule_mismatch(build, arg_types, message) -> None:
    op = build(*values(*arg_types))
    with pytest.raises(t.ShapeInferenceError) as info:
        op.infer_result_type()
    assert str(info.value) == message


INVALID = [
    (lambda x, w: t.LinearOp(x, w), (tensor(Q, 8), tensor(4, 8, 1)),
     "'tdsl.linear' weight must have rank 2, but got rank 3 (tensor<4x8x1xf32>)"),
    (lambda x, w: t.Conv2dOp(x, w), (tensor(Q, 8, 8), tensor(8, 3, 3, 3)),
     "'tdsl.conv2d' input must have rank 4 (N, C, H, W), but got rank 3 (tensor<?x8x8xf32>)"),
    (lambda x, w: t.Conv2dOp(x, w, stride=(1, 1, 1)), (tensor(Q, 3, 8, 8), tensor(8, 3, 3, 3)),
     "'tdsl.conv2d' stride must have 2 entries, but got 3"),
    (lambda x, w: t.Conv2dOp(x, w, groups=0), (tensor(Q, 3, 8, 8), tensor(8, 3, 3, 3)),
     "'tdsl.conv2d' groups must be >= 1, but got 0"),
    (lambda x: t.ReshapeOp(x, (-1, -1)), (tensor(2, 3),),
     "'tdsl.reshape' shape may contain at most one -1, but got [-1, -1]"),
    (lambda x: t.SoftmaxOp(x, dim=2), (tensor(2, 3),),
     "'tdsl.softmax' dim 2 is out of range for input of rank 2 (tensor<2x3xf32>)"),
    (lambda x: t.DropoutOp(x, p=1.0), (tensor(2, 3),), "'tdsl.dropout' p must be in [0, 1), but got 1.0"),
    (lambda a, b: t.AddOp(a, b), (tensor(2, 3), tensor(3, el=f16)),
     "'tdsl.add' operands must have the same element type, but lhs is tensor<2x3xf32> and rhs is tensor<3xf16>"),
]


@pytest.mark.parametrize("build, arg_types, message", INVALID)
def test_verifier(build, arg_types, message) -> None:
    op = build(*values(*arg_types))
    with pytest.raises(VerifyException) as info:
        op.verify()
    assert message in str(info.value)


def small_module() -> ModuleOp:
    """Linear inside Net, built with the helper constructors, with locations."""
    lin = t.LayerOp("Linear", "Linear", {})
    fwd = t.ForwardOp([tensor(Q, 8)], [tensor(Q, 4)], arg_names=["x"])
    w = t.GetParamOp("weight", tensor(4, 8))
    y = t.LinearOp(fwd.args[0], w.output, None, tensor(Q, 4))
    c = t.ConstantOp(DenseIntOrFPElementsAttr.from_list(tensor(3, el=i2), [-1, 0, 1]))
    fwd.body.block.add_ops([w, y, c, t.ReturnOp([y.output])])
    lin.body.block.add_ops([t.ParamOp("weight", tensor(4, 8), "kaiming_uniform", precision="ternary"), fwd])
    net = t.LayerOp("Net", "Net", {})
    nf = t.ForwardOp([tensor(Q, 8)], [tensor(Q, 4)])
    call = t.CallOp("fc", [nf.args[0]], [tensor(Q, 4)])
    nf.body.block.add_ops([call, t.ReturnOp([call.outputs[0]], names=["out"])])
    net.body.block.add_ops([t.InstanceOp("fc", "Linear"), nf])
    module = ModuleOp([lin, net])
    module.attributes["tdsl.entry"] = SymbolRefAttr("Net")
    for i, op in enumerate(module.walk()):
        op.location = FileLineColLoc(StringAttr("file.tdsl"), IntAttr(i + 1), IntAttr(5))
    return module


def test_helpers() -> None:
    module = small_module()
    module.verify()
    layers = t.module_layers(module)
    assert list(layers) == ["Linear", "Net"]
    assert t.entry_layer(module) is layers["Net"]
    assert layers["Linear"].lookup_param("weight").type == tensor(4, 8)
    assert layers["Linear"].lookup_param("bias") is None
    inst = layers["Net"].lookup_instance("fc")
    assert t.instance_callee(module, inst) is layers["Linear"]


@pytest.mark.parametrize("kw", [{}, {"print_generic_format": True}, {"print_debuginfo": True},
                                {"print_generic_format": True, "print_debuginfo": True}])
def test_round_trip(kw) -> None:
    text = show(small_module(), **kw)
    again = Parser(make_context(), text, "in.mlir").parse_module()
    again.verify()
    assert show(again, **kw) == text
    if kw.get("print_debuginfo"):
        assert 'loc("file.tdsl":3:5)' in text


def test_trits_print_as_i2() -> None:
    text = show(small_module())
    assert "tdsl.constant dense<[-1, 0, 1]> : tensor<3xi2>" in text


@pytest.mark.skipif(shutil.which("mlir-opt-19") is None, reason="needs mlir-opt-19")
def test_generic_form_parses_in_mlir_opt() -> None:
    text = show(small_module(), print_generic_format=True, print_debuginfo=True)
    p = subprocess.run(["mlir-opt-19", "--allow-unregistered-dialect"], input=text, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert '"tdsl.constant"() <{value = dense<[-1, 0, 1]> : tensor<3xi2>}>' in p.stdout


def test_unknown_param_is_rejected() -> None:
    module = small_module()
    get = next(op for op in module.walk() if isinstance(op, t.GetParamOp))
    get.param = SymbolRefAttr("wieght")
    with pytest.raises(VerifyException, match="refers to @wieght, which is not a tdsl.param of layer @Linear"):
        module.verify()
