"""Training recipes for ternary QAT: each one trains (the loss goes down), each part does what
it says (TTQ scales learn, calibration sets Δ, distillation mixes the teacher in, `long`
lengthens the schedule), and `tdsl train --recipe` selects them."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tdsl.errors import TdslError
from tdsl.quant.torch_ste import ternarize_torch
from tdsl.train.recipes import PARTS, Recipe, distill_loss, install_quantizer, prepare, train_recipe
from tdsl.train.trainer import TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def config(**kw) -> TrainConfig:
    base = dict(epochs=4, batch_size=64, optimizer="adamw", lr=3e-3, schedule="cosine", progress=False,
                health="off", seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def fp32_mlp(small):
    """The zoo MLP trained in FP32 for a few epochs on 300 digits: the init and teacher."""
    torch.set_num_threads(1)
    run, _ = train_recipe("mlp", "scratch", config(epochs=6), *small, precision="fp32")
    return {k: v.detach().clone() for k, v in run.module.state_dict().items()}


def train_loss(module, x, y) -> float:
    module.eval()
    with torch.no_grad():
        return float(F.cross_entropy(module(x), y))


def test_parse_names_parts_and_errors():
    assert Recipe.parse("scratch").name == "scratch"
    r = Recipe.parse("distill+finetune+long")
    assert (r.finetune, r.distill, r.long, r.learned_scale) == (True, True, True, False)
    assert r.name == "finetune+distill+long"
    assert Recipe.parse("calibrate").finetune and Recipe.parse("calibrate").name == "calibrate"
    assert Recipe.parse("learned-scale").learned_scale
    with pytest.raises(TdslError, match="unknown recipe part 'distil'.*distill"):
        Recipe.parse("finetune+distil")
    with pytest.raises(TdslError, match="contradicts"):
        Recipe.parse("scratch+finetune")
    with pytest.raises(TdslError, match="each replace the quantiser"):
        Recipe.parse("learned_scale+calibrate")
    with pytest.raises(TdslError, match="kd_alpha"):
        Recipe.parse("distill", kd_alpha=2.0)


@pytest.mark.parametrize("recipe", ["scratch", "finetune", "finetune+learned_scale", "finetune+shared_scale",
                                    "calibrate", "finetune+distill", "long", "learned_scale"])
def test_each_recipe_moves_the_loss_down(recipe, small, fp32_mlp):
    train, test = small
    run = prepare("mlp", recipe, config(lr=1e-3 if "finetune" in recipe or recipe == "calibrate" else 3e-3),
                  train, init=fp32_mlp)
    before = train_loss(run.module, *train)
    run.trainer(train, test).fit()
    after = train_loss(run.module, *train)
    assert after < before * 0.9, (recipe, before, after)


def test_finetune_loads_the_fp32_weights_and_needs_them(small, fp32_mlp):
    run = prepare("mlp", "finetune", config(), small[0], init=fp32_mlp)
    assert torch.equal(run.module.state_dict()["fc2.weight"], fp32_mlp["fc2.weight"])
    with pytest.raises(TdslError, match="give init"):
        prepare("mlp", "finetune", config(), small[0])
    with pytest.raises(TdslError, match="do not fit the QAT model: missing fc3.bias"):
        prepare("mlp", "finetune", config(), small[0], init={k: v for k, v in fp32_mlp.items() if k != "fc3.bias"})


def test_learned_scales_are_trained_parameters_used_by_the_layer(small, fp32_mlp):
    run = prepare("mlp", "finetune+learned_scale", config(epochs=2), small[0], init=fp32_mlp)
    assert set(run.ttq) == {"fc2.weight"}  # the default policy keeps fc1 and fc3 at fp16
    names = dict(run.module.named_parameters())
    assert {"fc2.weight_ttq.wp", "fc2.weight_ttq.wn"} <= set(names)
    ttq = run.ttq["fc2.weight"]
    w = run.module.fc2.weight.detach()
    trits, _, _ = ternarize_torch(w, "twn", per_channel=True)
    x = small[0][0][:8]
    h = torch.relu(run.module.fc1(x))
    with torch.no_grad():
        ttq.wp.fill_(2.0)
        ttq.wn.fill_(0.5)
        expected = F.linear(h, torch.where(trits > 0, 2.0, torch.where(trits < 0, -0.5, 0.0)), run.module.fc2.bias)
        assert torch.allclose(run.module.fc2(h), expected, atol=1e-5)
    run2 = prepare("mlp", "finetune+learned_scale", config(epochs=2), small[0], init=fp32_mlp)
    wp0 = run2.ttq["fc2.weight"].wp.detach().clone()
    run2.trainer(*small).fit()
    assert not torch.equal(run2.ttq["fc2.weight"].wp.detach(), wp0)
    assert run2.extra_scale_bytes == 4 * 128


def test_shared_scale_is_one_learned_scale_and_freezes_exactly(small, fp32_mlp):
    run = prepare("mlp", "finetune+shared_scale", config(epochs=2), small[0], init=fp32_mlp, policy="all")
    assert set(run.ttq) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    names = {n for n, _ in run.module.named_parameters() if "_ttq" in n}
    assert names == {"fc1.weight_ttq.wp", "fc2.weight_ttq.wp", "fc3.weight_ttq.wp"}
    wp0 = run.ttq["fc2.weight"].wp.detach().clone()
    run.trainer(*small).fit()
    assert not torch.equal(run.ttq["fc2.weight"].wp.detach(), wp0)
    assert run.extra_scale_bytes == 0
    run.module.eval()
    frozen = run.freeze()
    x = small[1][0]
    with torch.no_grad():
        assert torch.allclose(frozen(x), run.module(x), atol=1e-4)


def test_calibrate_sets_delta_per_layer_and_freezes_the_same_trits(small, fp32_mlp):
    run = prepare("mlp", "calibrate", config(epochs=1), small[0], init=fp32_mlp)
    cal = run.calibration["fc2.weight"]
    assert cal.error_after <= cal.error_before
    w = run.module.fc2.weight.detach()
    mult = torch.as_tensor(np.asarray(cal.multiplier, dtype=np.float32))
    delta = mult * w.abs().double().mean(dim=1).float()
    trits, alpha, _ = ternarize_torch(w, "fixed", True, threshold=delta)
    h = torch.relu(run.module.fc1(small[0][0][:8]))
    with torch.no_grad():
        assert torch.allclose(run.module.fc2(h), F.linear(h, trits * alpha[:, None], run.module.fc2.bias), atol=1e-5)
    run.trainer(*small).fit()
    run.module.eval()
    frozen = run.freeze()
    x = small[1][0]
    with torch.no_grad():
        assert torch.allclose(frozen(x), run.module(x), atol=1e-4)


def test_distill_loss_mixes_ce_and_teacher_kl():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss = distill_loss(student, teacher, alpha=0.3, temperature=2.0)
    out = student(x)
    ce = F.cross_entropy(out, y, reduction="sum")
    t = teacher(x)
    kl = F.kl_div(F.log_softmax(out / 2, 1), F.softmax(t / 2, 1), reduction="sum")
    assert torch.allclose(loss(out, y), 0.3 * ce + 0.7 * 4 * kl, atol=1e-5)
    student.eval()
    assert torch.allclose(loss(student(x), y), ce)  # the test loss stays plain CE
    assert not any(p.requires_grad for p in teacher.parameters())


def test_long_doubles_the_epochs_with_warmup_and_cosine(small):
    run = prepare("mlp", "long", config(epochs=3, schedule="constant"), small[0])
    assert (run.config.epochs, run.config.schedule) == (6, "cosine")
    assert run.config.warmup_steps == int(0.05 * 6 * 5)  # 300 samples / 64 = 5 steps per epoch


def test_fp32_precision_and_misuse(small):
    run = prepare("mlp", "scratch", config(), small[0], precision="fp32")
    assert "ternarize" not in run.compiled.passes
    with pytest.raises(TdslError, match="needs precision 'ternary'"):
        prepare("mlp", "learned_scale", config(), small[0], precision="fp32")
    with pytest.raises(TdslError, match="not a parameter"):
        install_quantizer(run.module, "fc2.nothing", lambda w: w)
    assert PARTS[0] == "scratch"


def test_cli_recipe_from_an_fp32_checkpoint(tmp_path: Path, capsys):
    from tdsl.tools.tdsl_cli import main

    fp32 = tmp_path / "fp32"
    assert main(["train", "mlp", "--epochs", "1", "--out", str(fp32), "--no-progress",
                 "--optimizer", "adamw", "--batch-size", "128", "--lr", "3e-3"]) == 0
    capsys.readouterr()  # only the ternary run's report below
    assert main(["train", "mlp", "--epochs", "1", "--out", str(tmp_path / "q"), "--no-progress",
                 "--optimizer", "adamw", "--batch-size", "128", "--lr", "1e-3", "--recipe", "finetune+distill",
                 "--init", str(fp32 / "checkpoints")]) == 0
    out = capsys.readouterr().out
    assert "ternary (default policy), recipe finetune+distill" in out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", out).group(1))
    assert accuracy > 30
    # The run leaves a deployable package: packed trits only, scoring what training reported.
    import tdsl
    from tdsl.train.data import load_digits

    pkg = tdsl.load(tmp_path / "q" / "package")
    assert any(k.endswith("weight_packed") for k in pkg.arrays)
    assert not any(a.dtype.kind == "f" and k.endswith("fc2.weight") for k, a in pkg.arrays.items())
    data = load_digits()
    with torch.no_grad():
        pred = pkg.to_torch().eval()(data.x_test).argmax(dim=1)
    frozen_acc = (pred == data.y_test).float().mean().item() * 100
    assert abs(frozen_acc - accuracy) < 1.0
    # ... and its card reports that accuracy to the Hub (model-index), as config.json does.
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "q" / "package" / "README.md")
    (result,) = card.data.eval_results
    assert (result.dataset_name, result.dataset_split, result.metric_type) == ("digits", "test", "accuracy")
    assert abs(result.metric_value * 100 - accuracy) < 0.01
    assert card.data.pipeline_tag == "image-classification" and card.data.datasets == ["digits"]
    assert pkg.config["evaluation"]["metrics"]["accuracy"] == result.metric_value
    assert main(["train", "mlp", "--epochs", "1", "--out", str(tmp_path / "x"), "--no-progress",
                 "--recipe", "finetune"]) == 1
    assert "give init (--init CKPT)" in capsys.readouterr().err


# ----- the input layer: progressive, optimal_delta, auto (all-ternary MNIST-1D, issue 22) ----


def test_progressive_fades_the_input_layer_in_and_ends_ternary(small):
    run = prepare("mlp", "progressive", config(epochs=2), small[0], policy="all")
    key, quantizer = run.input_quantizer
    assert key == "fc1.weight" and quantizer.method == "twn"
    x = small[0][0][:8]
    w = run.module.fc1.weight
    with torch.no_grad():
        assert torch.allclose(run.module.fc1(x), F.linear(x, w, run.module.fc1.bias), atol=1e-6)  # λ = 0: float
        trits, alpha, _ = ternarize_torch(w, "twn", per_channel=True)
        for step, lam in ((25, 0.5), (50, 1.0), (99, 1.0)):
            quantizer.step(step, 100)  # the fade lasts half the steps
            mixed = lam * trits * alpha[:, None] + (1 - lam) * w
            assert quantizer.lam == lam
            assert torch.allclose(run.module.fc1(x), F.linear(x, mixed, run.module.fc1.bias), atol=1e-5)
    quantizer.step(0, 100)
    run.trainer(*small).fit()  # the trainer drives the fade: it ends fully ternary
    assert quantizer.lam == 1.0
    run.module.eval()
    with torch.no_grad():
        assert torch.allclose(run.freeze()(small[1][0]), run.module(small[1][0]), atol=1e-4)


def test_optimal_delta_trains_and_freezes_the_input_layer_with_the_optimal_rule(small):
    run = prepare("mlp", "optimal_delta", config(epochs=1), small[0], policy="all")
    run.trainer(*small).fit()
    w = run.module.fc1.weight.detach()
    trits, alpha, delta = ternarize_torch(w, "optimal", per_channel=True)
    x = small[1][0]
    with torch.no_grad():
        assert torch.allclose(run.module.fc1(x), F.linear(x, trits * alpha[:, None], run.module.fc1.bias), atol=1e-5)
    assert np.array_equal(run.thresholds()["fc1.weight"], delta.numpy())
    run.module.eval()
    with torch.no_grad():
        assert torch.allclose(run.freeze()(x), run.module(x), atol=1e-4)
    # the other layers keep their emitted rule (TWN), and under the default policy (fc1 at
    # fp16) the input-layer parts have nothing to do
    assert prepare("mlp", "progressive+optimal_delta", config(), small[0]).input_quantizer is None


def test_fixed_input_ternarises_the_input_layer_once_and_keeps_it(small, fp32_mlp):
    """`fixed_input`: the input layer is α·T of the FP32 weight (the `optimal` rule), is not
    trained, and the emitted quantiser, the frozen model and the package all keep those trits."""
    train, test = small
    run = prepare("mlp", "fixed_input", config(epochs=2, lr=1e-3), train, init=fp32_mlp, policy="all")
    assert run.recipe.name == "fixed_input" and run.recipe.needs_init and run.fixed_input == "fc1.weight"
    trits, alpha, _ = ternarize_torch(fp32_mlp["fc1.weight"], "optimal", per_channel=True)
    want = trits.float() * alpha[:, None]
    w = run.module.fc1.weight
    assert torch.equal(w.detach(), want) and not w.requires_grad
    before_fc2 = run.module.fc2.weight.detach().clone()
    run.trainer(train, test).fit()
    assert torch.equal(w.detach(), want) and not torch.equal(run.module.fc2.weight.detach(), before_fc2)
    x = test[0]
    with torch.no_grad():  # the emitted TWN quantiser maps α·T to itself
        assert torch.allclose(run.module.fc1(x), F.linear(x, want, run.module.fc1.bias), atol=1e-6)
    frozen = run.freeze()
    packed = {k.rsplit(".", 1)[0]: v for k, v in frozen.ternary_weights().items()}
    got_trits, got_alpha = packed["fc1"] if "fc1" in packed else packed["fc1.weight"]
    assert torch.equal(got_trits.reshape(trits.shape), trits)
    assert torch.equal(got_alpha.float().reshape(alpha.shape), alpha)
    run.module.eval()
    with torch.no_grad():
        assert torch.allclose(frozen(x), run.module(x), atol=1e-4)
    # the default policy keeps the input layer at fp16: nothing to fix
    assert prepare("mlp", "fixed_input", config(), train, init=fp32_mlp).fixed_input is None
    with pytest.raises(TdslError, match="give init"):
        prepare("mlp", "fixed_input", config(), train, policy="all")
    with pytest.raises(TdslError, match="'fixed_input' keeps the input layer's trits fixed, 'progressive' trains"):
        Recipe.parse("fixed_input+progressive")
    with pytest.raises(TdslError, match="contradicts"):
        Recipe.parse("scratch+fixed_input")
    with pytest.raises(TdslError, match="needs precision 'ternary'"):
        prepare("mlp", "fixed_input", config(), train, init=fp32_mlp, precision="fp32")


def test_auto_is_the_recommended_recipe_per_policy_and_misuse_is_named(small, fp32_mlp):
    assert prepare("mlp", "auto", config(), small[0], policy="all").recipe.name == "optimal_delta"
    assert prepare("mlp", "auto", config(), small[0]).recipe.name == "scratch"
    # with FP32 weights, `all` takes the input layer from them; `default` (conv1 at fp16) is unchanged
    run = prepare("mlp", "auto", config(), small[0], policy="all", init=fp32_mlp)
    assert run.recipe.name == "fixed_input" and run.fixed_input == "fc1.weight"
    assert prepare("mlp", "auto", config(), small[0], init=fp32_mlp).recipe.name == "scratch"
    with pytest.raises(TdslError, match="'shared_scale' replaces every layer's quantiser, 'progressive'"):
        Recipe.parse("shared_scale+progressive")
    with pytest.raises(TdslError, match="progressive_fraction"):
        Recipe.parse("progressive", progressive_fraction=1.0)
    with pytest.raises(TdslError, match="needs precision 'ternary'"):
        prepare("mlp", "progressive", config(), small[0], precision="fp32")


def test_auto_all_ternary_mnist1d_cnn_trains_packs_and_deploys_on_numba(tmp_path: Path):
    """The all-ternary default end to end on the model of the accuracy table: a tiny run, its
    package, and the Numba deployment of that package agreeing with the torch backend."""
    import tdsl
    from tdsl.package.writer import save
    from tdsl.train.recipes import evaluate, mnist1d_dataset

    d = mnist1d_dataset(seed=7)
    train = (d.x_train[:400, None, :], d.y_train[:400])
    test = (d.x_test[:200, None, :], d.y_test[:200])
    run = prepare("mnist1d_cnn", "auto", config(epochs=3, batch_size=100, lr=1e-2), train, policy="all",
                  params={"batch_norm": True})
    assert run.input_quantizer[0] == "conv1.weight"
    assert all(s.precision == "ternary" for s in run.compiled.freeze(run.module).layout.values()
               if s.role == "packed" or s.role == "weight")
    result = run.trainer(train, test).fit()
    assert result.loss < result.history[0]["loss"] and run.input_quantizer[1].lam == 1.0
    frozen = run.freeze()
    assert evaluate(frozen, *test) == evaluate(run.module, *test)
    pkg = tdsl.load(save(frozen, tmp_path / "pkg"))
    x = test[0].numpy()
    with torch.no_grad():
        want = pkg.to_torch().eval()(test[0]).numpy()
    got = tdsl.deploy(pkg, "numba", act_quant="float")(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.mean(got.argmax(axis=1) == want.argmax(axis=1)) == 1.0


def test_cli_recipe_auto_under_the_all_policy(tmp_path: Path, capsys):
    from tdsl.tools.tdsl_cli import main

    assert main(["train", "mlp", "--epochs", "1", "--out", str(tmp_path / "q"), "--no-progress", "--optimizer",
                 "adamw", "--batch-size", "128", "--lr", "3e-3", "--recipe", "auto", "--policy", "all"]) == 0
    assert "ternary (all policy), recipe optimal_delta" in capsys.readouterr().out
    # with an FP32 checkpoint, auto keeps the input layer's trits from it (fixed_input)
    common = ["--epochs", "1", "--no-progress", "--optimizer", "adamw", "--batch-size", "128", "--lr", "3e-3"]
    assert main(["train", "mlp", *common, "--out", str(tmp_path / "f")]) == 0
    capsys.readouterr()
    assert main(["train", "mlp", *common, "--out", str(tmp_path / "g"), "--recipe", "auto", "--policy", "all",
                 "--init", str(tmp_path / "f" / "checkpoints")]) == 0
    assert "ternary (all policy), recipe fixed_input" in capsys.readouterr().out


def test_cli_policy_without_recipe_trains_ternary_with_auto_and_init_alone_is_refused(tmp_path: Path, capsys):
    """`--policy all` alone used to train FP32 and ignore the policy; now it means `--recipe auto`
    (said in the output) and packs a ternary model; `--init` without a recipe reading it is refused."""
    import tdsl
    from tdsl.tools.tdsl_cli import main

    common = ["--epochs", "1", "--no-progress", "--optimizer", "adamw", "--batch-size", "128", "--lr", "3e-3"]
    assert main(["train", "mlp", *common, "--out", str(tmp_path / "q"), "--policy", "all"]) == 0
    out = capsys.readouterr().out
    assert "ternary (all policy), recipe optimal_delta (--policy all without --recipe: --recipe auto)" in out
    pkg = tdsl.load(tmp_path / "q" / "package")
    assert pkg.precision == "ternary" and set(pkg.config["precision"]["weights"].values()) == {"ternary"}
    assert main(["train", "mlp", *common, "--out", str(tmp_path / "i"), "--init", str(tmp_path / "q")]) == 1
    assert "--init is read by a QAT recipe; add --recipe" in capsys.readouterr().err
