"""inline + fuse on ResNet-18 and MobileNetV2 through the public API and tdsl-opt."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from xdsl.dialects.builtin import FileLineColLoc, ModuleOp

import tdsl
from tdsl.dialects import kern
from tdsl.dialects.tdsl import (
    BatchNormOp,
    CallOp,
    Conv2dOp,
    GetParamOp,
    InstanceOp,
    LayerOp,
    entry_layer,
)
from tdsl.dialects.tern import GetPackedOp, PackedConv2dOp, PackedParamOp, TernConv2dOp
from tdsl.errors import PassError

ROOT = Path(__file__).resolve().parents[3]
PACKED = "shape-infer,ternarize,pack{format=2bit},inline,fuse"


def ops_of(module: ModuleOp, kind: type) -> list:
    return [op for op in module.walk() if isinstance(op, kind)]


def weight_name(op: kern.Conv2dOp | kern.LinearOp) -> str:
    read = op.weight.owner
    assert isinstance(read, GetParamOp | GetPackedOp)
    return read.param.root_reference.data


@pytest.fixture(scope="module")
def resnet() -> ModuleOp:
    return tdsl.compile("resnet18", pipeline=PACKED).module


@pytest.fixture(scope="module")
def mobilenet() -> ModuleOp:
    return tdsl.compile("mobilenetv2", pipeline=PACKED).module


def test_resnet18_every_conv_is_one_fused_kernel(resnet: ModuleOp) -> None:
    convs = ops_of(resnet, kern.Conv2dOp)
    assert len(convs) == 20
    assert all(c.has_bn for c in convs)
    assert not ops_of(resnet, BatchNormOp)
    assert not ops_of(resnet, Conv2dOp) and not ops_of(resnet, PackedConv2dOp)
    assert sum(c.precision.data == "ternary" and c.format.data == "2bit" for c in convs) == 19
    assert [c.precision.data for c in convs if c.precision.data != "ternary"] == ["fp16"]  # the stem


def test_resnet18_residual_goes_to_each_blocks_last_conv(resnet: ModuleOp) -> None:
    residual = [c for c in ops_of(resnet, kern.Conv2dOp) if c.residual is not None]
    assert len(residual) == 8
    assert all(weight_name(c).endswith(".conv2.weight") and c.activation.data == "relu" for c in residual)
    downsample = [c for c in ops_of(resnet, kern.Conv2dOp) if ".downsample." in weight_name(c)]
    assert len(downsample) == 3 and all(c.activation.data == "none" and c.residual is None for c in downsample)
    (fc,) = ops_of(resnet, kern.LinearOp)
    assert weight_name(fc) == "fc.weight" and fc.precision.data == "fp16" and fc.bias is not None


def test_mobilenetv2_relu6_and_linear_bottleneck_residuals(mobilenet: ModuleOp) -> None:
    convs = ops_of(mobilenet, kern.Conv2dOp)
    assert len(convs) == 52 and all(c.has_bn for c in convs)
    assert not ops_of(mobilenet, BatchNormOp)
    assert sum(c.activation.data == "relu6" for c in convs) == 35
    residual = [c for c in convs if c.residual is not None]
    assert len(residual) == 10  # stride-1 blocks with cin == cout
    assert all(c.activation.data == "none" for c in residual)


@pytest.mark.parametrize("fixture", ["resnet", "mobilenet"])
def test_every_op_keeps_a_dsl_location(fixture: str, request: pytest.FixtureRequest) -> None:
    module: ModuleOp = request.getfixturevalue(fixture)
    entry = entry_layer(module)
    missing = [op.name for op in entry.walk() if not isinstance(op.location, FileLineColLoc)]
    assert missing == []


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv2"])
def test_inline_names_are_the_torch_state_dict_keys(model: str) -> None:
    module = tdsl.compile(model, pipeline="shape-infer,inline").module
    (layer,) = [op for op in module.ops if isinstance(op, LayerOp)]
    names = [p.sym_name.data for p in layer.params_ops()]
    assert names == list(tdsl.compile(model).to_torch().state_dict().keys())
    assert not ops_of(module, CallOp) and not ops_of(module, InstanceOp)


def test_inline_after_pack_names_packed_weight_and_scale() -> None:
    module = tdsl.compile("resnet18", pipeline="shape-infer,ternarize,pack,inline").module
    packed = {p.sym_name.data for p in ops_of(module, PackedParamOp)}
    params = {p.sym_name.data for p in entry_layer(module).params_ops()}
    assert "layer1.0.conv1.weight" in packed and "layer1.0.conv1.weight_scale" in params
    assert len(packed) == 19 and {"conv1.weight", "fc.weight"} <= params


def test_inline_needs_shape_infer() -> None:
    with pytest.raises(PassError, match="inline: .*run shape-infer first"):
        tdsl.compile("resnet18", pipeline="inline")


def test_fuse_unpacked_ternary_after_ternarize() -> None:
    module = tdsl.compile("resnet18", pipeline="shape-infer,ternarize,inline,fuse").module
    convs = ops_of(module, kern.Conv2dOp)
    assert len(convs) == 20 and not ops_of(module, TernConv2dOp)
    assert sum(c.precision.data == "ternary" and c.format is None and c.scale is not None for c in convs) == 19


def test_fuse_options_turn_parts_off() -> None:
    module = tdsl.compile("resnet18", pipeline="shape-infer,inline,fuse{fold-bn=false}").module
    assert len(ops_of(module, BatchNormOp)) == 20
    assert all(not c.has_bn and c.residual is None for c in ops_of(module, kern.Conv2dOp))
    module = tdsl.compile("resnet18", pipeline="shape-infer,inline,fuse{epilogue=false}").module
    assert all(c.has_bn and c.activation.data == "none" and c.residual is None for c in ops_of(module, kern.Conv2dOp))


@pytest.mark.skipif(shutil.which("mlir-opt-19") is None, reason="needs mlir-opt-19")
def test_fused_resnet18_generic_form_parses_in_mlir_opt() -> None:
    tdsl_opt = str(Path(sys.executable).parent / "tdsl-opt")
    generic = subprocess.run(
        [tdsl_opt, str(ROOT / "tdsl" / "models" / "resnet18.tdsl"), "-p", PACKED, "--emit", "generic"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert '"kern.conv2d"' in generic
    subprocess.run(
        ["mlir-opt-19", "--allow-unregistered-dialect"], input=generic, capture_output=True, text=True, check=True
    )
