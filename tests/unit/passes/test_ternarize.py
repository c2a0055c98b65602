"""ternarize / precision / pack on real zoo models through the public API and tdsl-opt."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from xdsl.dialects.builtin import ModuleOp

import tdsl
from tdsl.dialects.tdsl import Conv2dOp, LayerOp, LinearOp, ParamOp, entry_layer, module_layers
from tdsl.dialects.tern import PackedConv2dOp, PackedLinearOp, QuantizeOp, TernConv2dOp, TernLinearOp
from tdsl.errors import PassError
from tdsl.tools.tdsl_opt import main as tdsl_opt

ROOT = Path(__file__).resolve().parents[3]
RESNET = ROOT / "tdsl" / "models" / "resnet18.tdsl"


def precisions(module: ModuleOp) -> dict[str, str | None]:
    """Weight path -> the precision on the param of the layer that instance path reaches."""
    layers = module_layers(module)
    out: dict[str, str | None] = {}

    def visit(layer: LayerOp, path: str) -> None:
        for op in layer.forward.body.block.ops:
            weight = getattr(op, "weight", None)
            if isinstance(op, Conv2dOp | LinearOp | TernConv2dOp | TernLinearOp) and weight is not None:
                name = (op.weight.owner.weight.owner if isinstance(op, TernConv2dOp | TernLinearOp)
                        else op.weight.owner).param.root_reference.data
                decl = layer.lookup_param(name)
                assert isinstance(decl, ParamOp)
                out[f"{path}.{name}" if path else name] = decl.precision.data if decl.precision else None
        for inst in layer.instance_ops():
            visit(layers[inst.callee.root_reference.data], f"{path}.{inst.sym_name.data}" if path else inst.sym_name.data)

    visit(entry_layer(module), "")
    return out


def test_resnet18_default_policy_keeps_first_conv_and_fc() -> None:
    module = tdsl.compile("resnet18", pipeline="shape-infer,ternarize").module
    p = precisions(module)
    assert len(p) == 21  # 20 convs (17 3x3/7x7 + 3 downsample) and one fc
    assert p["conv1.weight"] == "fp16" and p["fc.weight"] == "fp16"
    ternary = [k for k, v in p.items() if v == "ternary"]
    assert len(ternary) == 19
    assert "layer2.0.downsample.0.weight" in ternary and "layer1.0.conv1.weight" in ternary
    assert sum(isinstance(op, QuantizeOp) for op in module.walk()) == 10  # one per shared specialisation


def test_resnet18_policy_all_makes_every_weight_ternary() -> None:
    p = precisions(tdsl.compile("resnet18", pipeline="shape-infer,ternarize{policy=all}").module)
    assert sum(v == "ternary" for v in p.values()) == 21


def test_resnet18_policy_none_changes_nothing() -> None:
    module = tdsl.compile("resnet18", pipeline="shape-infer,ternarize{policy=none}").module
    assert set(precisions(module).values()) == {None}
    assert not any(isinstance(op, QuantizeOp) for op in module.walk())


def test_override_clones_shared_specialisations() -> None:
    module = tdsl.compile("resnet18", pipeline="shape-infer,ternarize{override=\"layer4.*=int8\"}").module
    p = precisions(module)
    assert all(v == "int8" for k, v in p.items() if k.startswith("layer4."))
    assert all(v == "ternary" for k, v in p.items() if k.startswith("layer3."))
    layers = module_layers(module)
    ent = entry_layer(module)

    def target(path: str) -> LayerOp:
        layer = ent
        for name in path.split("."):
            inst = layer.lookup_instance(name)
            assert inst is not None, path
            layer = layers[inst.callee.root_reference.data]
        return layer

    l4 = {target(f"layer4.{i}.{c}").sym_name.data for i in "01" for c in ("conv1", "conv2")}
    l3 = {target(f"layer3.{i}.{c}").sym_name.data for i in "01" for c in ("conv1", "conv2")}
    assert not l4 & l3
    for sym in l4:
        assert layers[sym].lookup_param("weight").precision.data == "int8"
    for sym in l3:
        assert layers[sym].lookup_param("weight").precision.data == "ternary"
    syms = [op.sym_name.data for op in module.ops if isinstance(op, LayerOp)]
    assert len(syms) == len(set(syms))


def test_shared_specialisation_is_cloned_when_one_instance_is_overridden() -> None:
    # layer1.0.conv1, .conv2, layer1.1.conv1, .conv2 share one Conv2d specialisation
    module = tdsl.compile("resnet18", pipeline="shape-infer,ternarize{override=\"layer1.1.conv2.weight=fp32\"}").module
    p = precisions(module)
    assert p["layer1.1.conv2.weight"] == "fp32"
    assert [p[f"layer1.{i}.{c}.weight"] for i in "01" for c in ("conv1", "conv2")][:3] == ["ternary"] * 3


SRC = """
layer Net() {
    @fp16 let w: Tensor[float32, 8, 4] = kaiming_uniform()
    let fc1 = Linear(8, 8)
    let fc2 = Linear(8, 8)
    let fc3 = Linear(8, 2)
    fn forward(x: Tensor[float32, N, 4]) -> Tensor[float32, N, 2] {
        return fc3(fc2(fc1(linear(x, w))))
    }
}
"""


def test_dsl_annotation_is_honoured() -> None:
    p = precisions(tdsl.compile(SRC, pipeline="shape-infer,ternarize{policy=all}").module)
    assert p == {"w": "fp16", "fc1.weight": "ternary", "fc2.weight": "ternary", "fc3.weight": "ternary"}


def test_override_beats_annotation_and_first_match_wins() -> None:
    p = precisions(tdsl.compile(SRC, pipeline="shape-infer,ternarize{override=\"w=int8 fc2.*=fp32 fc*=int8\"}").module)
    assert p == {"w": "int8", "fc1.weight": "int8", "fc2.weight": "fp32", "fc3.weight": "int8"}


def test_precision_pass_sets_float_precisions() -> None:
    p = precisions(tdsl.compile("resnet18", pipeline="shape-infer,precision{default=int8 override=\"fc.*=fp32\"}").module)
    assert p["fc.weight"] == "fp32" and p["conv1.weight"] == "int8"
    assert sum(v == "int8" for v in p.values()) == 20


def test_pack_replaces_every_ternary_weight() -> None:
    module = tdsl.compile("resnet18", pipeline="shape-infer,ternarize{policy=all},pack{format=base3}").module
    ops = list(module.walk())
    assert not any(isinstance(op, QuantizeOp | TernConv2dOp | TernLinearOp) for op in ops)
    assert sum(isinstance(op, PackedConv2dOp) for op in ops) == 11  # one per Conv2d specialisation
    assert sum(isinstance(op, PackedLinearOp) for op in ops) == 1


@pytest.mark.parametrize("pipeline, message", [
    ("shape-infer,pack", "pack: no ternary weights; run ternarize first"),
    ("shape-infer,ternarize{threshold=foo}", "ternarize: threshold must be one of twn, absmean, fixed, sparsity, got 'foo'"),
    ("shape-infer,ternarize{override=\"conv1=fp8\"}", "ternarize: override 'conv1=fp8': precision must be one of"),
    ("shape-infer,precision{override=\"conv1=ternary\"}",
     "precision: override 'conv1=ternary': precision must be one of fp32, fp16, int8"),
])
def test_misuse_is_a_pass_error(pipeline: str, message: str) -> None:
    with pytest.raises(PassError) as info:
        tdsl.compile("resnet18", pipeline=pipeline)
    assert info.value.message.startswith(message)


def test_acceptance_command_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r18.mlir"
    assert tdsl_opt([str(RESNET), "-p", "shape-infer,ternarize,pack{format=2bit}", "-o", str(out)]) == 0
    generic = tmp_path / "r18-generic.mlir"
    assert tdsl_opt([str(out), "--emit", "generic", "-o", str(generic)]) == 0
    assert tdsl_opt([str(generic), "-o", str(tmp_path / "again.mlir")]) == 0
    assert (tmp_path / "again.mlir").read_text() == out.read_text()
    if shutil.which("mlir-opt-19"):
        p = subprocess.run(["mlir-opt-19", "--allow-unregistered-dialect", str(generic)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
