"""The torch emitter: emitted source runs and matches torch computed directly.

IR comes from hand-written `.mlir` text; each test emits it, loads it and compares the
module against torch functions fed the module's own state dict.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from tdsl.backends.torch.emit import EmitterBug, emit_module
from tdsl.backends.torch.loader import instantiate, load_source
from tdsl.dialects.context import make_context
from tdsl.errors import SourceLoc, TdslError


def parse(text: str, allow_unregistered: bool = False) -> ModuleOp:
    module = Parser(make_context(allow_unregistered), text).parse_module()
    module.verify()
    return module


def build(text: str) -> tuple[torch.nn.Module, str]:
    module = parse(text)
    source = emit_module(module)
    return instantiate(module, source), source


# --------------------------------------------------------------------------- IR builders


def linear_layer(sym: str = "Linear", fin: int = 8, fout: int = 4) -> str:
    return f"""
  tdsl.layer @{sym} layer "Linear" params {{in_features = {fin} : i64, out_features = {fout} : i64, bias = true}} {{
    tdsl.param @weight : tensor<{fout}x{fin}xf32> {{init = "kaiming_uniform", kind = "param"}}
    tdsl.param @bias : tensor<{fout}xf32> {{init = "uniform", kind = "param", init_args = {{fan_in = {fin} : i64}}}}
    tdsl.forward (%x : tensor<?x{fin}xf32>) -> tensor<?x{fout}xf32> {{
      %w = tdsl.get_param @weight : tensor<{fout}x{fin}xf32>
      %b = tdsl.get_param @bias : tensor<{fout}xf32>
      %y = tdsl.linear %x, %w, %b : (tensor<?x{fin}xf32>, tensor<{fout}x{fin}xf32>, tensor<{fout}xf32>) -> tensor<?x{fout}xf32>
      tdsl.return %y : tensor<?x{fout}xf32>
    }}
  }} loc("net.tdsl":1:1)"""


MLP = f"""
builtin.module attributes {{tdsl.entry = @Net, tdsl.source = "net.tdsl"}} {{
{linear_layer()}
  tdsl.layer @Net layer "Net" params {{}} {{
    tdsl.instance @fc = @Linear
    tdsl.forward (%x : tensor<?x8xf32>) -> tensor<?x4xf32> {{
      %y = tdsl.call @fc(%x) : (tensor<?x8xf32>) -> tensor<?x4xf32>
      %r = tdsl.relu %y : tensor<?x4xf32> -> tensor<?x4xf32>
      tdsl.return %r : tensor<?x4xf32>
    }}
  }} loc("net.tdsl":9:1)
}}
"""


def conv_layer(sym: str, cin: int, cout: int, k: int, s: int, p: int, hin: int) -> str:
    hout = (hin + 2 * p - k) // s + 1
    x, y, w = f"tensor<?x{cin}x{hin}x{hin}xf32>", f"tensor<?x{cout}x{hout}x{hout}xf32>", f"tensor<{cout}x{cin}x{k}x{k}xf32>"
    return f"""
  tdsl.layer @{sym} layer "Conv2d" params {{cin = {cin} : i64, cout = {cout} : i64, kernel = {k} : i64, stride = {s} : i64, padding = {p} : i64, bias = false}} {{
    tdsl.param @weight : {w} {{init = "kaiming_uniform", kind = "param"}}
    tdsl.forward (%x : {x}) -> {y} {{
      %w = tdsl.get_param @weight : {w}
      %y = tdsl.conv2d %x, %w {{stride = array<i64: {s}, {s}>, padding = array<i64: {p}, {p}>, dilation = array<i64: 1, 1>, groups = 1 : i64}} : ({x}, {w}) -> {y}
      tdsl.return %y : {y}
    }}
  }}"""


def bn_layer(sym: str, c: int, h: int) -> str:
    x, v = f"tensor<?x{c}x{h}x{h}xf32>", f"tensor<{c}xf32>"
    return f"""
  tdsl.layer @{sym} layer "BatchNorm2d" params {{c = {c} : i64, eps = 1.0e-05 : f64, momentum = 1.0e-01 : f64}} {{
    tdsl.param @weight : {v} {{init = "ones", kind = "param"}}
    tdsl.param @bias : {v} {{init = "zeros", kind = "param"}}
    tdsl.param @running_mean : {v} {{init = "zeros", kind = "buffer"}}
    tdsl.param @running_var : {v} {{init = "ones", kind = "buffer"}}
    tdsl.forward (%x : {x}) -> {x} {{
      %m = tdsl.get_param @running_mean : {v}
      %s = tdsl.get_param @running_var : {v}
      %w = tdsl.get_param @weight : {v}
      %b = tdsl.get_param @bias : {v}
      %y = tdsl.batch_norm %x, %m, %s, %w, %b {{eps = 1.0e-05 : f64, momentum = 1.0e-01 : f64}} : ({x}, {v}, {v}, {v}, {v}) -> {x}
      tdsl.return %y : {x}
    }}
  }}"""


def block_layer(sym: str, cin: int, cout: int, stride: int, h: int, convs: tuple[str, str], bns: tuple[str, str],
                down: str | None) -> str:
    h2 = h // stride
    x, m, y = f"tensor<?x{cin}x{h}x{h}xf32>", f"tensor<?x{cout}x{h2}x{h2}xf32>", f"tensor<?x{cout}x{h2}x{h2}xf32>"
    down_decl = f"tdsl.instance @downsample = @{down}" if down else ""
    identity = (f"%i = tdsl.call @downsample(%x) : ({x}) -> {y}" if down else "")
    ident = "%i" if down else "%x"
    return f"""
  tdsl.layer @{sym} layer "BasicBlock" params {{cin = {cin} : i64, cout = {cout} : i64, stride = {stride} : i64}} {{
    tdsl.instance @conv1 = @{convs[0]}
    tdsl.instance @bn1 = @{bns[0]}
    tdsl.instance @conv2 = @{convs[1]}
    tdsl.instance @bn2 = @{bns[1]}
    {down_decl}
    tdsl.forward (%x : {x}) -> {y} {{
      %a = tdsl.call @conv1(%x) : ({x}) -> {m}
      %b = tdsl.call @bn1(%a) : ({m}) -> {m}
      %out = tdsl.relu %b : {m} -> {m}
      %c = tdsl.call @conv2(%out) : ({m}) -> {m}
      %d = tdsl.call @bn2(%c) : ({m}) -> {m}
      {identity}
      %s = tdsl.add %d, {ident} : ({m}, {y}) -> {y}
      %r = tdsl.relu %s : {y} -> {y}
      tdsl.return %r : {y}
    }}
  }} loc("resnet.tdsl":3:1)"""


RESNET = f"""
builtin.module attributes {{tdsl.entry = @Net, tdsl.source = "resnet.tdsl"}} {{
{conv_layer("Conv2d", 4, 4, 3, 1, 1, 8)}
{conv_layer("Conv2d_1", 4, 8, 3, 2, 1, 8)}
{conv_layer("Conv2d_2", 8, 8, 3, 1, 1, 4)}
{conv_layer("Conv2d_3", 4, 8, 1, 2, 0, 8)}
{conv_layer("Conv2d_4", 4, 4, 3, 1, 1, 16)}
{bn_layer("BatchNorm2d", 4, 8)}
{bn_layer("BatchNorm2d_1", 8, 4)}
{bn_layer("BatchNorm2d_2", 4, 16)}
  tdsl.layer @Sequential layer "Sequential" params {{}} {{
    tdsl.instance @"0" = @Conv2d_3
    tdsl.instance @"1" = @BatchNorm2d_1
    tdsl.forward (%x : tensor<?x4x8x8xf32>) -> tensor<?x8x4x4xf32> {{
      %a = tdsl.call @"0"(%x) : (tensor<?x4x8x8xf32>) -> tensor<?x8x4x4xf32>
      %b = tdsl.call @"1"(%a) : (tensor<?x8x4x4xf32>) -> tensor<?x8x4x4xf32>
      tdsl.return %b : tensor<?x8x4x4xf32>
    }}
  }}
{block_layer("BasicBlock", 4, 4, 1, 8, ("Conv2d", "Conv2d"), ("BatchNorm2d", "BatchNorm2d"), None)}
{block_layer("BasicBlock_1", 4, 8, 2, 8, ("Conv2d_1", "Conv2d_2"), ("BatchNorm2d_1", "BatchNorm2d_1"), "Sequential")}
{block_layer("BasicBlock_2", 4, 4, 1, 16, ("Conv2d_4", "Conv2d_4"), ("BatchNorm2d_2", "BatchNorm2d_2"), None)}
  tdsl.layer @Net layer "Net" params {{}} {{
    tdsl.instance @"layer1.0" = @BasicBlock
    tdsl.instance @"layer1.1" = @BasicBlock_1
    tdsl.instance @extra = @BasicBlock_2
    tdsl.forward (%x : tensor<?x4x8x8xf32>, %z : tensor<?x4x16x16xf32>) -> (tensor<?x8x4x4xf32>, tensor<?x4x16x16xf32>) {{
      %a = tdsl.call @"layer1.0"(%x) : (tensor<?x4x8x8xf32>) -> tensor<?x4x8x8xf32>
      %b = tdsl.call @"layer1.1"(%a) : (tensor<?x4x8x8xf32>) -> tensor<?x8x4x4xf32>
      %c = tdsl.call @extra(%z) : (tensor<?x4x16x16xf32>) -> tensor<?x4x16x16xf32>
      tdsl.return %b, %c : tensor<?x8x4x4xf32>, tensor<?x4x16x16xf32>
    }}
  }}
}}
"""


# --------------------------------------------------------------------------- tests


def test_linear_relu_matches_torch_and_trains() -> None:
    model, _ = build(MLP)
    sd = model.state_dict()
    assert list(sd) == ["fc.weight", "fc.bias"]
    bound = 1 / math.sqrt(8)
    assert sd["fc.bias"].abs().max() <= bound and sd["fc.weight"].abs().max() <= bound
    x = torch.randn(5, 8, requires_grad=True)
    y = model(x)
    torch.testing.assert_close(y, F.relu(F.linear(x, sd["fc.weight"], sd["fc.bias"])))
    y.sum().backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    assert x.grad is not None


def _ref_bn(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        False, 0.1, 1e-5)


def _ref_block(sd: dict, p: str, x: torch.Tensor, stride: int) -> torch.Tensor:
    out = F.relu(_ref_bn(sd, p + "bn1.", F.conv2d(x, sd[p + "conv1.weight"], stride=stride, padding=1)))
    out = _ref_bn(sd, p + "bn2.", F.conv2d(out, sd[p + "conv2.weight"], padding=1))
    identity = x
    if p + "downsample.0.weight" in sd:
        identity = _ref_bn(sd, p + "downsample.1.", F.conv2d(x, sd[p + "downsample.0.weight"], stride=stride))
    return F.relu(out + identity)


def _randomise(model: torch.nn.Module) -> dict:
    """Non-trivial BN statistics, so the comparison exercises every tensor."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif t.is_floating_point() and not name.endswith("conv1.weight"):
                t.normal_()
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resnet_blocks_match_torch_with_torchvision_keys() -> None:
    model, _ = build(RESNET)
    sd = _randomise(model)
    bn = ["weight", "bias", "running_mean", "running_var"]
    block = ["conv1.weight", *(f"bn1.{k}" for k in bn), "conv2.weight", *(f"bn2.{k}" for k in bn)]
    expected = [f"layer1.0.{k}" for k in block] + [f"layer1.1.{k}" for k in block]
    expected += ["layer1.1.downsample.0.weight", *(f"layer1.1.downsample.1.{k}" for k in bn)]
    expected += [f"extra.{k}" for k in block]
    assert list(sd) == expected
    assert isinstance(model.layer1, torch.nn.ModuleList)
    assert isinstance(model.layer1[1].downsample, torch.nn.Sequential)
    model.eval()
    x, z = torch.randn(3, 4, 8, 8), torch.randn(2, 4, 16, 16)
    b, c = model(x, z)
    ref_b = _ref_block(sd, "layer1.1.", _ref_block(sd, "layer1.0.", x, 1), 2)
    torch.testing.assert_close(b, ref_b)
    torch.testing.assert_close(c, _ref_block(sd, "extra.", z, 1))


def test_batch_norm_updates_running_stats_only_in_training() -> None:
    model, _ = build(RESNET)
    x, z = torch.randn(3, 4, 8, 8), torch.randn(2, 4, 16, 16)
    before = model.layer1[0].bn1.running_mean.clone()
    model.eval()
    model(x, z)
    torch.testing.assert_close(model.layer1[0].bn1.running_mean, before)
    model.train()
    b, c = model(x, z)
    assert not torch.equal(model.layer1[0].bn1.running_mean, before)
    (b.sum() + c.sum()).backward()
    assert model.layer1[1].downsample[0].weight.grad is not None


def test_specialisations_share_one_class_with_a_params_table() -> None:
    module = parse(RESNET)
    source = emit_module(module)
    assert source.count("class BasicBlock(nn.Module):") == 1
    assert source.count("class Conv2d(nn.Module):") == 1
    assert "class Sequential" not in source
    loaded = load_source(source, "resnet")
    # BasicBlock and its shape clone BasicBlock_2 share (4, 4, 1); BasicBlock_1 is (4, 8, 2).
    assert loaded.BasicBlock._SPECS == {(4, 4, 1): 0, (4, 8, 2): 1}
    assert loaded.Conv2d._SPECS == {
        (4, 4, 3, 1, 1, False): 0, (4, 8, 3, 2, 1, False): 1, (8, 8, 3, 1, 1, False): 2, (4, 8, 1, 2, 0, False): 3,
    }
    # With and without downsample the forward bodies differ, so they dispatch.
    assert "def _forward_0(" in source and "def _forward_1(" in source
    # Both BatchNorm2d forwards read the same, so they share one forward method.
    bn_class = source[source.index("class BatchNorm2d("):source.index("class BasicBlock(")]
    assert bn_class.count("def forward(") == 1 and "_forward_" not in bn_class
    assert loaded.BatchNorm2d._SPECS == {(4, 1e-5, 0.1): 0, (8, 1e-5, 0.1): 1}
    block = loaded.BasicBlock(cin=4, cout=8, stride=2)
    assert list(dict(block.named_children())) == ["conv1", "bn1", "conv2", "bn2", "downsample"]
    assert block.conv1.weight.shape == (8, 4, 3, 3)
    with pytest.raises(TdslError, match=r"layer BasicBlock was compiled for .*not \(cin=4, cout=8, stride=1\)"):
        loaded.BasicBlock(cin=4, cout=8, stride=1)


def test_shape_clones_that_emit_different_code_are_a_bug() -> None:
    clone = linear_layer("Linear_1").replace("tdsl.return %y", "%q = tdsl.tanh %y : tensor<?x4xf32> -> tensor<?x4xf32>\n      tdsl.return %q")
    text = MLP.replace(linear_layer(), linear_layer() + clone)
    with pytest.raises(EmitterBug, match="share parameters"):
        emit_module(parse(text))


def test_emission_is_deterministic() -> None:
    first = emit_module(parse(RESNET))
    assert emit_module(parse(RESNET)) == first
    module = parse(RESNET)
    assert emit_module(module) == emit_module(module) == first


def test_op_without_handler_is_a_located_error() -> None:
    text = MLP.replace(
        "%r = tdsl.relu %y : tensor<?x4xf32> -> tensor<?x4xf32>",
        '%r = "test.mystery"(%y) : (tensor<?x4xf32>) -> tensor<?x4xf32> loc("net.tdsl":12:7)',
    )
    with pytest.raises(TdslError, match="cannot emit 'test.mystery'") as info:
        emit_module(parse(text, allow_unregistered=True))
    assert info.value.loc == SourceLoc("net.tdsl", 12, 7)


def test_class_docstring_names_layer_and_location() -> None:
    source = emit_module(parse(MLP))
    assert '"""DSL layer `Linear` (net.tdsl:1:1)."""' in source
    assert source.startswith('"""PyTorch modules generated by tdsl from net.tdsl.')


def test_batch_stays_dynamic() -> None:
    model, _ = build(MLP)
    assert model(torch.randn(1, 8)).shape == (1, 4)
    assert model(torch.randn(7, 8)).shape == (7, 4)


HOSTILE = r"""
builtin.module attributes {tdsl.entry = @"__import__", tdsl.source = "evil\"\"\"\nimport os"} {
  tdsl.layer @class layer "class" params {self = 8 : i64, lambda = 4 : i64, "a.b" = "x'\"\n"} {
    tdsl.param @forward : tensor<4x8xf32> {init = "kaiming_uniform", kind = "param"}
    tdsl.param @training : tensor<4xf32> {init = "randn", kind = "buffer"}
    tdsl.param @parameters : tensor<4xf32> {init = "uniform", init_args = {bound = 5.0e-01 : f64}, kind = "param"}
    tdsl.forward (%self : tensor<?x8xf32>) -> tensor<?x4xf32> attributes {arg_names = ["lambda"]} {
      %torch = tdsl.get_param @forward : tensor<4x8xf32>
      %F = tdsl.get_param @parameters : tensor<4xf32>
      %nn = tdsl.linear %self, %torch, %F : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<?x4xf32>
      %print = tdsl.get_param @training : tensor<4xf32>
      %super = tdsl.add %nn, %print : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
      tdsl.return %super : tensor<?x4xf32>
    }
  } loc("evil\"\"\"\nimport os":2:3)
  tdsl.layer @torch layer "torch" params {} {
    tdsl.instance @print = @class
    tdsl.instance @F = @class
    tdsl.instance @self = @class
    tdsl.forward (%x : tensor<?x8xf32>) -> tensor<?x4xf32> {
      %a = tdsl.call @print(%x) : (tensor<?x8xf32>) -> tensor<?x4xf32>
      %b = tdsl.call @F(%x) : (tensor<?x8xf32>) -> tensor<?x4xf32>
      %c = tdsl.call @self(%x) : (tensor<?x8xf32>) -> tensor<?x4xf32>
      %d = tdsl.mul %a, %b : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
      %e = tdsl.sub %d, %c : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
      tdsl.return %e : tensor<?x4xf32>
    }
  }
  tdsl.layer @"__import__" layer "__import__" params {} {
    tdsl.instance @nn = @torch
    tdsl.instance @forward = @class
    tdsl.instance @"lambda.0" = @class
    tdsl.instance @"lambda.1" = @class
    tdsl.instance @super = @class
    tdsl.forward (%x : tensor<?x8xf32>) -> tensor<?x4xf32> {
      %a = tdsl.call @nn(%x) : (tensor<?x8xf32>) -> tensor<?x4xf32>
      %b = tdsl.call @forward(%x) : (tensor<?x8xf32>) -> tensor<?x4xf32>
      %c = tdsl.call @"lambda.1"(%x) : (tensor<?x8xf32>) -> tensor<?x4xf32>
      %d = tdsl.call @super(%x) : (tensor<?x8xf32>) -> tensor<?x4xf32>
      %s = tdsl.add %a, %b : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
      %t = tdsl.div %s, %c : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
      %u = tdsl.add %t, %d : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
      tdsl.return %u : tensor<?x4xf32>
    }
  }
}
"""


def test_hostile_names_compile_run_and_match() -> None:
    model, source = build(HOSTILE)
    # Nothing from the source name or a string parameter escapes its literal.
    assert not any(line.startswith("import os") for line in source.splitlines())
    loaded = load_source(source, "hostile")
    assert set(loaded.LAYERS) == {"class", "torch", "__import__"}
    assert loaded.LAYERS["class"].__name__ == "class_"
    assert loaded.LAYERS["torch"].__name__ == "torch_"
    assert loaded.LAYERS["__import__"].__name__ == "__import___"
    assert "__import__" not in vars(loaded) and loaded.torch is torch
    assert loaded.class_._SPECS == {(8, 4, "x'\"\n"): 0}
    sd = model.state_dict()
    leaf = ["forward_", "parameters_", "training_"]
    expected = [f"nn.{inst}.{k}" for inst in ("print", "F", "self") for k in leaf]
    expected += [f"{inst}.{k}" for inst in ("forward_", "lambda_.0", "lambda_.1", "super") for k in leaf]
    assert sorted(sd) == sorted(expected)
    assert model.training is True and callable(model.forward) and callable(model.parameters)

    def cls(p: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, sd[p + "forward_"], sd[p + "parameters_"]) + sd[p + "training_"]

    x = torch.randn(3, 8)
    inner = cls("nn.print.", x) * cls("nn.F.", x) - cls("nn.self.", x)
    expected_y = (inner + cls("forward_.", x)) / cls("lambda_.1.", x) + cls("super.", x)
    torch.testing.assert_close(model(x), expected_y)
    assert len(list(model.parameters())) == 3 * 2 + 4 * 2


def test_hostile_source_name_stays_inside_literals() -> None:
    source = emit_module(parse(HOSTILE))
    compile(source, "<test>", "exec")
    assert "'DSL layer `class` (evil\"\"\"\\nimport os:2:3).'" in source


OPS = """
builtin.module attributes {tdsl.entry = @Ops} {
  tdsl.layer @Ops layer "Ops" params {} {
    tdsl.param @w2 : tensor<4x5xf32> {init = "randn", kind = "param"}
    tdsl.param @tw : tensor<5x6xf32> {init = "randn", kind = "param"}
    tdsl.forward (%x : tensor<?x3x8x8xf32>, %v : tensor<?x6xf32>) -> (tensor<?x3x5xf32>, tensor<?x5xf32>, tensor<3xi2>) {
      %mp = tdsl.max_pool2d %x {kernel = array<i64: 2, 2>, stride = array<i64: 2, 2>, padding = array<i64: 0, 0>} : tensor<?x3x8x8xf32> -> tensor<?x3x4x4xf32>
      %ap = tdsl.avg_pool2d %mp {kernel = array<i64: 3, 3>, stride = array<i64: 1, 1>, padding = array<i64: 1, 1>} : tensor<?x3x4x4xf32> -> tensor<?x3x4x4xf32>
      %aa = tdsl.adaptive_avg_pool2d %ap {output_size = array<i64: 2, 2>} : tensor<?x3x4x4xf32> -> tensor<?x3x2x2xf32>
      %fl = tdsl.flatten %aa {start_dim = 1 : i64, end_dim = -1 : i64} : tensor<?x3x2x2xf32> -> tensor<?x12xf32>
      %g = tdsl.gelu %fl : tensor<?x12xf32> -> tensor<?x12xf32>
      %rs = tdsl.reshape %g {shape = array<i64: -1, 3, 4>} : tensor<?x12xf32> -> tensor<?x3x4xf32>
      %w2 = tdsl.get_param @w2 : tensor<4x5xf32>
      %mm = tdsl.matmul %rs, %w2 : (tensor<?x3x4xf32>, tensor<4x5xf32>) -> tensor<?x3x5xf32>
      %sg = tdsl.sigmoid %mm : tensor<?x3x5xf32> -> tensor<?x3x5xf32>
      %th = tdsl.tanh %sg : tensor<?x3x5xf32> -> tensor<?x3x5xf32>
      %sm = tdsl.softmax %th {dim = -1 : i64} : tensor<?x3x5xf32> -> tensor<?x3x5xf32>
      %dr = tdsl.dropout %sm {p = 5.0e-01 : f64} : tensor<?x3x5xf32> -> tensor<?x3x5xf32>
      %tw = tdsl.get_param @tw : tensor<5x6xf32>
      %tm = tdsl.ternary_matmul %v, %tw : (tensor<?x6xf32>, tensor<5x6xf32>) -> tensor<?x5xf32>
      %k = tdsl.constant dense<[1.5, -2.0, 0.0, 3.0, 4.0]> : tensor<5xf32>
      %r6 = tdsl.relu6 %tm : tensor<?x5xf32> -> tensor<?x5xf32>
      %y = tdsl.add %r6, %k : (tensor<?x5xf32>, tensor<5xf32>) -> tensor<?x5xf32>
      %t = tdsl.constant dense<[1, 0, -1]> : tensor<3xi2>
      tdsl.return %dr, %y, %t : tensor<?x3x5xf32>, tensor<?x5xf32>, tensor<3xi2> {names = ["probs", "tern", "trits"]}
    }
  }
}
"""


def test_every_value_op_matches_torch() -> None:
    model, source = build(OPS)
    assert "_rt.ternary(self.tw).to(v.dtype)" in source
    assert "torch.reshape(g, (-1, 3, 4))" in source
    model.eval()
    sd = model.state_dict()
    x, v = torch.randn(2, 3, 8, 8), torch.randn(2, 6, requires_grad=True)
    out = model(x, v)
    assert list(out) == ["probs", "tern", "trits"]
    h = F.adaptive_avg_pool2d(F.avg_pool2d(F.max_pool2d(x, 2), 3, 1, 1), 2)
    h = F.gelu(torch.flatten(h, 1)).reshape(-1, 3, 4)
    probs = torch.softmax(torch.tanh(torch.sigmoid(h @ sd["w2"])), dim=-1)
    torch.testing.assert_close(out["probs"], probs)
    t = sd["tw"].round().clamp(-1, 1)
    tern = F.relu6(v @ t.T) + torch.tensor([1.5, -2.0, 0.0, 3.0, 4.0])
    torch.testing.assert_close(out["tern"], tern)
    assert out["trits"].dtype == torch.int8 and out["trits"].tolist() == [1, 0, -1]
    # Straight-through estimator: d/dW of the ternarised product is the plain linear gradient.
    g = torch.randn(2, 5)
    mask = ((v @ t.T) > 0) & ((v @ t.T) < 6)
    expected_grad = (g * mask).T @ v.detach()
    torch.testing.assert_close(torch.autograd.grad((out["tern"] * g).sum(), model.tw)[0], expected_grad)


def test_dropout_follows_training_mode() -> None:
    model, _ = build(OPS)
    x, v = torch.randn(64, 3, 8, 8), torch.randn(64, 6)
    model.train()
    dropped = model(x, v)["probs"]
    assert (dropped == 0).any()
    model.eval()
    assert not (model(x, v)["probs"] == 0).any()


INITS = """
builtin.module attributes {tdsl.entry = @Inits} {
  tdsl.layer @Inits layer "Inits" params {} {
    tdsl.param @tern : tensor<32x32xf32> {init = "random_ternary", kind = "param", precision = "ternary"}
    tdsl.param @z : tensor<3xf32> {init = "zeros", kind = "param"}
    tdsl.param @o : tensor<3xf16> {init = "ones", kind = "buffer"}
    tdsl.param @n : tensor<64x64xf16> {init = "randn", kind = "param"}
    tdsl.param @trits : tensor<2x2xi2> {init = "constant", kind = "buffer", init_args = {value = dense<[[1, 0], [-1, 1]]> : tensor<2x2xi2>}}
    tdsl.param @c : tensor<2xf32> {init = "constant", kind = "param", init_args = {value = 2.5e-01 : f64}}
    tdsl.param @k1 : tensor<1000xf32> {init = "kaiming_uniform", kind = "param", init_args = {fan_in = 16 : i64}}
    tdsl.param @u : tensor<1000xf32> {init = "uniform", kind = "param", init_args = {fan_in = 4 : i64}}
    tdsl.forward (%x : tensor<?x3xf32>) -> tensor<?x3xf32> {
      %z = tdsl.get_param @z : tensor<3xf32>
      %y = tdsl.add %x, %z : (tensor<?x3xf32>, tensor<3xf32>) -> tensor<?x3xf32>
      tdsl.return %y : tensor<?x3xf32>
    }
  }
}
"""


def test_initialisers_and_dtypes() -> None:
    model, _ = build(INITS)
    assert set(model.tern.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert model.z.dtype == torch.float32 and model.z.eq(0).all()
    assert model.o.dtype == torch.float16 and model.o.eq(1).all() and "o" in dict(model.named_buffers())
    assert model.n.dtype == torch.float16 and 0.8 < model.n.float().std() < 1.2
    assert model.trits.dtype == torch.int8 and model.trits.tolist() == [[1, 0], [-1, 1]]
    assert model.c.tolist() == [0.25, 0.25]
    assert model.k1.abs().max() <= 0.25 and model.k1.abs().max() > 0.2
    assert model.u.abs().max() <= 0.5 and model.u.abs().max() > 0.45
    assert [n for n, _ in model.named_parameters()] == ["tern", "z", "n", "c", "k1", "u"]


def test_uniform_without_bound_is_a_located_error() -> None:
    text = INITS.replace('init_args = {fan_in = 4 : i64}}', '}')
    text = text.replace('tdsl.param @u : tensor<1000xf32> {init = "uniform", kind = "param", }',
                        'tdsl.param @u : tensor<1000xf32> {init = "uniform", kind = "param"} loc("i.tdsl":4:5)')
    with pytest.raises(TdslError, match="uniform init of 'u' needs init_args bound or fan_in") as info:
        emit_module(parse(text))
    assert info.value.loc == SourceLoc("i.tdsl", 4, 5)


def test_module_list_keeps_indices_when_an_instance_was_removed() -> None:
    text = MLP.replace("tdsl.instance @fc = @Linear",
                       'tdsl.instance @"fc.0" = @Linear\n    tdsl.instance @"fc.2" = @Linear')
    text = text.replace("tdsl.call @fc(%x)", 'tdsl.call @"fc.2"(%x)')
    model, _ = build(text)
    assert list(model.state_dict()) == ["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"]
    assert isinstance(model.fc[1], torch.nn.Identity)
    sd = model.state_dict()
    x = torch.randn(2, 8)
    torch.testing.assert_close(model(x), F.relu(F.linear(x, sd["fc.2.weight"], sd["fc.2.bias"])))


def test_emitted_resnet_blocks_export() -> None:
    model, _ = build(RESNET)
    model.eval()
    args = (torch.randn(2, 4, 8, 8), torch.randn(2, 4, 16, 16))
    exported = torch.export.export(model, args)
    for got, want in zip(exported.module()(*args), model(*args)):
        torch.testing.assert_close(got, want)


def test_values_without_name_hints_get_numbered_locals() -> None:
    text = MLP.replace("%y = tdsl.call", "%0 = tdsl.call").replace("tdsl.relu %y", "tdsl.relu %0")
    text = text.replace("%r = tdsl.relu", "%1 = tdsl.relu").replace("tdsl.return %r", "tdsl.return %1")
    source = emit_module(parse(text))
    assert "        v = self.fc(x)\n        v_2 = F.relu(v)\n        return v_2\n" in source
