"""`tdsl.import_torch` / `tdsl import MODEL.pt2` on hand-written modules: the program it
writes, the package's outputs against torch's, the ternary chain to a Numba deployment, and
the refusals (an op tdsl lacks, an asymmetric pad) that write nothing."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import tdsl
from tdsl.importers.torch_export import program_path
from tdsl.tools.tdsl_cli import main as tdsl_main

torch.set_num_threads(1)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class Block(nn.Module):
    """A residual block whose width and stride differ between its uses."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.proj = nn.Conv2d(cin, cout, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)) + self.proj(x))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.MaxPool2d(2))
        self.blocks = nn.ModuleList([Block(8, 8, 1), Block(8, 16, 2), Block(16, 32, 2)])
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Running statistics that are not the identity, so batch norm is really tested."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _rel_error(got: torch.Tensor | np.ndarray, want: torch.Tensor) -> float:
    got = torch.as_tensor(np.asarray(got)) if not isinstance(got, torch.Tensor) else got
    return float((got.float() - want.float()).abs().max() / want.abs().max())


def test_mlp_program_names_and_outputs(tmp_path):
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(3, 8)
    pkg = tdsl.import_torch(model, (x,), tmp_path / "mlp")
    text = program_path(tmp_path / "mlp").read_text()
    assert "let fc1 = Linear(8, 16)" in text and "let fc2 = Linear(16, 4)" in text
    assert "fn forward(x: Tensor[float32, N, 8]) -> Tensor[float32, N, 4]" in text
    assert pkg.config["model"]["source"] == text
    assert set(pkg.state_dict()) == set(model.state_dict())
    with torch.no_grad():
        want = model(x)
        assert _rel_error(pkg.to_torch()(x), want) <= 1e-6
        other = torch.randn(7, 8)  # another batch size: the batch dim is symbolic
        assert _rel_error(pkg.to_torch()(other), model(other)) <= 1e-6


def test_repeated_blocks_are_one_layer_with_parameters(tmp_path):
    torch.manual_seed(0)
    model, x = _randomise_bn(CNN()), torch.randn(2, 3, 16, 16)
    pkg = tdsl.import_torch(model, (x,), tmp_path / "cnn")
    text = program_path(tmp_path / "cnn").read_text()
    assert len(re.findall(r"^layer Block\b", text, re.M)) == 1, text
    assert re.search(r"^layer Block\(cin: int, cout: int, stride: int\)", text, re.M), text
    assert "let blocks = [Block(8, 8, 1), Block(8, 16, 2), Block(16, 32, 2)]" in text
    assert "return blocks(" in text or "blocks(stem(x))" in text
    assert "Sequential(Conv2d(3, 8, kernel=3, padding=1), BatchNorm2d(8), ReLU6(), MaxPool2d(2, stride=2))" in text
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(pkg.state_dict()) == expected
    with torch.no_grad():
        assert _rel_error(pkg.to_torch()(x), model(x)) <= 1e-5


def test_ternary_chain_deploys_on_numba(tmp_path):
    torch.manual_seed(0)
    model, x = _randomise_bn(CNN()), torch.randn(2, 3, 16, 16)
    pkg = tdsl.import_torch(model, (x,), tmp_path / "cnn")
    frozen = tdsl.quantize(pkg, precision="ternary")
    assert any(s.role == "packed" for s in frozen.layout.values())
    saved = tdsl.save(frozen, tmp_path / "cnn-ternary", source=pkg.config["model"]["source"])
    loaded = tdsl.load(saved)
    assert loaded.precision == "ternary"
    run = loaded.deploy(act_quant="float")
    got = run(x.numpy())
    with torch.no_grad():
        want = frozen(x)
    assert got.shape == (2, 5)
    assert _rel_error(got, want) <= 1e-3


def test_cli_import_pt2_then_export_ternary(tmp_path, capsys):
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(2, 8)
    pt2 = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(pt2))
    out = tmp_path / "pkg"
    assert tdsl_main(["import", str(pt2), "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "212 parameters (212 in the torch model)" in summary
    assert tdsl.load(out).precision == "fp32"
    rc = tdsl_main(["export", str(program_path(out)), "--weights", str(out / "model.safetensors"),
                    "--precision", "ternary", "--policy", "all", "--format", "package", "-o",
                    str(tmp_path / "ternary")])
    assert rc == 0
    ternary = tdsl.load(tmp_path / "ternary")
    assert ternary.precision == "ternary"
    assert ternary.deploy(act_quant="float")(x.numpy()).shape == (2, 4)


class Cumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.fc(x), dim=1)


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Cumsum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_unsupported_op_names_op_module_and_writes_nothing(tmp_path):
    with pytest.raises(tdsl.TdslError) as err:
        tdsl.import_torch(Wrapper(), (torch.randn(2, 4),), tmp_path / "out")
    message = str(err.value)
    assert "aten.cumsum" in message and "module 'inner'" in message and "supported ops: " in message
    assert "conv2d" in message
    assert not (tmp_path / "out").exists() and not program_path(tmp_path / "out").exists()


class AsymmetricPad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, (0, 1, 0, 1)))


class SymmetricPad(AsymmetricPad):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, (1, 1, 1, 1)))


class WidePad(AsymmetricPad):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, (1, 1, 2, 2)))  # more than half the kernel: not a conv padding


def test_pads_fold_into_convolutions_or_become_pad2d(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    for model, expected in ((SymmetricPad().eval(), "Conv2d(3, 4, kernel=3, stride=2, padding=1)"),
                            (WidePad().eval(), "pad2d(x, [1, 1, 2, 2])"),
                            (AsymmetricPad().eval(), "pad2d(x, [0, 1, 0, 1])")):
        out = tmp_path / type(model).__name__
        pkg = tdsl.import_torch(model, (x,), out)
        assert expected in program_path(out).read_text()
        with torch.no_grad():
            assert _rel_error(pkg.to_torch()(x), model(x)) <= 1e-5


class ReflectPad(AsymmetricPad):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))


def test_reflect_pad_is_refused(tmp_path):
    with pytest.raises(tdsl.TdslError, match=r"cannot import op aten.*pad.*mode 'reflect'|aten.reflection_pad2d"):
        tdsl.import_torch(ReflectPad(), (torch.randn(2, 3, 8, 8),), tmp_path / "reflect")
    assert not (tmp_path / "reflect").exists()


def test_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(tdsl.TdslError, match="nn.Module or a torch.export ExportedProgram"):
        tdsl.import_torch("resnet18", (torch.randn(1, 3),))
    with pytest.raises(tdsl.TdslError, match="example_inputs must be tensors"):
        tdsl.import_torch(MLP(), ([1, 2],))
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    assert tdsl_main(["import", str(bad), "-o", str(tmp_path / "o")]) == 1


class SelfAttention(nn.Module):
    """Multi-head causal self-attention as decoders write it: [N, T, D] projections viewed as
    [N, heads, T, head_dim] for F.scaled_dot_product_attention and merged back."""

    def __init__(self, d: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.ModuleList([nn.Linear(d, d) for _ in range(3)])
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = (proj(self.norm(x)).view(n, t, self.heads, d // self.heads).transpose(1, 2) for proj in self.qkv)
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.out(a.transpose(1, 2).reshape(n, t, d))


def test_causal_attention_and_keyword_names(tmp_path):
    torch.manual_seed(0)
    model, x = SelfAttention().eval(), torch.randn(2, 5, 16)
    pkg = tdsl.import_torch(model, (x,), tmp_path / "attn")
    text = program_path(tmp_path / "attn").read_text()
    assert "attention(qkv[0](norm(x)), qkv[1](norm(x)), qkv[2](norm(x)), 4, causal=true)" in text
    assert text.count("let norm = LayerNorm(16)") == 1  # called three times, declared once
    with torch.no_grad():
        assert _rel_error(pkg.to_torch()(x), model(x)) <= 1e-5


class TanhGelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.fc(x), approximate="tanh")


class Tied(nn.Module):
    """A head that reads its sibling's weight (tied embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.a(x), self.b.weight)


@pytest.mark.parametrize("model, message", [
    (TanhGelu(), r"aten.gelu.default.*gelu\(approximate='tanh'\) \(the exact erf form only\) is not supported"),
    (Tied(), r"reads 'b.weight', which belongs to another module"),
])
def test_refusals_name_what_is_wrong(tmp_path, model, message):
    with pytest.raises(tdsl.TdslError, match=message):
        tdsl.import_torch(model.eval(), (torch.randn(2, 4),), tmp_path / "out")
    assert not (tmp_path / "out").exists()
