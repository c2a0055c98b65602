"""Model definitions nobody here wrote, imported through torch.export: transformers'
ResNetForImageClassification (ResNet-18 layout) and a BERT encoder, with tiny random configs
(no downloads). The package's fp32 outputs must equal transformers' (max relative error
≤ 1e-3) with the same parameter count, and the programs must read like the zoo's."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import tdsl
from tdsl.importers.torch_export import program_path

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)


def _rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.abs().max())


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.slow  # about 20 s: torch.export and compiling 20 convolutions
def test_resnet18_layout(tmp_path):
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[2, 2, 2, 2],
                                       layer_type="basic", num_labels=10)
    model = _randomise_bn(transformers.ResNetForImageClassification(config))
    x = torch.randn(2, 3, 32, 32)
    pkg = tdsl.import_torch(model, (x,), tmp_path / "resnet")
    text = program_path(tmp_path / "resnet").read_text()
    assert len(text.splitlines()) < 80, text
    assert len(re.findall(r"^layer ResNetBasicLayer\b", text, re.M)) == 1  # one layer for the repeated block
    assert "let stages = [ResNetStage(), ResNetStage2(8, 16), ResNetStage2(16, 32), ResNetStage2(32, 64)]" in text
    assert "let classifier = Sequential(Flatten(), Linear(64, 10))" in text
    stored = pkg.state_dict()
    assert sum(v.numel() for k, v in stored.items() if "running" not in k) == _params(model)
    renamed = {k.replace(".layer_.", ".layer.") for k in stored}  # `layer` is a tdsl keyword
    assert renamed == {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    with torch.no_grad():
        want = model(x).logits
        assert _rel_error(pkg.to_torch()(x), want) <= 1e-3


def _tiny_bert():
    """A 2-layer BERT encoder of width 16 (random weights) and a batch of token ids."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    return transformers.BertModel(config, add_pooling_layer=False).eval(), torch.randint(0, 50, (2, 8))


def test_bert_encoder(tmp_path):
    model, ids = _tiny_bert()
    pkg = tdsl.import_torch(model, (ids,), tmp_path / "bert")
    text = program_path(tmp_path / "bert").read_text()
    assert "return attention(query(x), key(x), value(x), 2, causal=false)" in text
    assert len(re.findall(r"^layer BertLayer\b", text, re.M)) == 1
    assert "let layer_ = [BertLayer(), BertLayer()]" in text
    assert "position_embeddings(positions(x))" in text  # the position-id buffer's slice is 0..T-1
    stored = pkg.state_dict()
    params = {k: v for k, v in stored.items() if k in {n.replace(".layer.", ".layer_.")
                                                       for n, _ in model.named_parameters()}}
    assert sum(v.numel() for v in params.values()) == _params(model)
    with torch.no_grad():
        want = model(ids).last_hidden_state
        assert _rel_error(pkg.to_torch()(ids.to(torch.int32)), want) <= 1e-3


@pytest.mark.slow  # about 25 s: 52 convolutions
def test_mobilenetv2_tf_padding(tmp_path):
    """transformers' MobileNetV2 pads "same" the TensorFlow way ([0, 1, 0, 1] before its
    stride-2 convolutions: `pad2d`; symmetric pads fold into the convolutions) and uses ReLU6."""
    torch.manual_seed(0)
    config = transformers.MobileNetV2Config(depth_multiplier=0.25, image_size=32, num_labels=10)
    model = _randomise_bn(transformers.MobileNetV2ForImageClassification(config))
    x = torch.randn(2, 3, 32, 32)
    pkg = tdsl.import_torch(model, (x,), tmp_path / "mnv2")
    text = program_path(tmp_path / "mnv2").read_text()
    assert "pad2d(x, [0, 1, 0, 1])" in text and "ReLU6()" in text
    assert text.count("pad2d(") == 1  # the 3x3 stride-1 convolutions' symmetric pads fold into their padding
    assert sum(v.numel() for k, v in pkg.state_dict().items() if "running" not in k) == _params(model)
    with torch.no_grad():
        assert _rel_error(pkg.to_torch()(x), model(x).logits) <= 1e-3


@pytest.mark.slow  # about 2 minutes: Numba compiles the ternary kernels
@pytest.mark.parametrize("name", ["resnet", "mobilenetv2"])
def test_ternary_import_deploys_on_numba(tmp_path, name):
    """Imported → ternary (post-training) → the Numba runtime, which agrees with the torch
    backend on the same frozen weights."""
    torch.manual_seed(0)
    if name == "resnet":
        config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[2, 2, 2, 2],
                                           layer_type="basic", num_labels=10)
        model = _randomise_bn(transformers.ResNetForImageClassification(config))
    else:
        config = transformers.MobileNetV2Config(depth_multiplier=0.25, image_size=32, num_labels=10)
        model = _randomise_bn(transformers.MobileNetV2ForImageClassification(config))
    x = torch.randn(2, 3, 32, 32)
    frozen = tdsl.quantize(tdsl.import_torch(model, (x,), tmp_path / name), precision="ternary")
    assert sum(s.role == "packed" for s in frozen.layout.values()) > 10
    got = frozen.deploy(act_quant="float")(x.numpy())
    with torch.no_grad():
        want = frozen(x)
    assert _rel_error(torch.from_numpy(got), want) <= 1e-3


def test_ternary_bert_encoder_deploys_on_numba(tmp_path):
    """An imported BERT encoder, ternarised and saved, deploys on the Numba runtime from its
    package: its token-type ids (an integer buffer) stay integer indices in the plan."""
    model, ids = _tiny_bert()
    pkg = tdsl.import_torch(model, (ids,), tmp_path / "bert")
    frozen = tdsl.quantize(pkg, precision="ternary", policy="all")
    tdsl.save(frozen, tmp_path / "bert-t", source=pkg.config["model"]["source"])
    run = tdsl.load(tmp_path / "bert-t").deploy(act_quant="float")
    got = run(ids.to(torch.int32).numpy())
    with torch.no_grad():
        want = frozen(ids.to(torch.int32))
    assert _rel_error(torch.from_numpy(np.asarray(got)), want) <= 1e-3
