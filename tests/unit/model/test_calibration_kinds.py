"""Threshold calibration of every weighted kind, not only linear and conv2d: a ternary
`conv_transpose2d` is calibrated by `tdsl.quantize(calibrate=...)` and by the `calibrate`
recipe through the torch backend's call of its kind, checked against `F.conv_transpose2d`
on the layer's own float inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tdsl
from tdsl.model.precision import calibration_op
from tdsl.quant.torch_ste import ternarize_torch
from tdsl.train.recipes import prepare
from tdsl.train.trainer import TrainConfig

GROUPS = 2
SOURCE = f"""layer Up() {{
    let conv = Conv2d(3, 8, kernel=3, padding=1)
    let up = ConvTranspose2d(8, 4, kernel=3, stride=2, padding=1, output_padding=1, groups={GROUPS})
    let fc = Linear(4 * 12 * 12, 5)
    fn forward(x: Tensor[float32, N, 3, 6, 6]) -> Tensor[float32, N, 5] {{
        return fc(flatten(up(relu(conv(x))), start_dim=1))
    }}
}}
"""


def torch_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """w[O, C/g, kh, kw] as F.conv_transpose2d's [C, O/g, kh, kw]."""
    out, per_group = w.shape[:2]
    return w.reshape(groups, out // groups, per_group, *w.shape[2:]).transpose(1, 2).reshape(
        groups * per_group, out // groups, *w.shape[2:])


def up(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv_transpose2d(h, torch_weight(w, GROUPS), None, stride=2, padding=1, output_padding=1,
                              groups=GROUPS)


@pytest.fixture(scope="module")
def fp32() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return tdsl.compile(SOURCE, pipeline="shape-infer").to_torch().state_dict()


def batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 6, 6, generator=g) for _ in range(2)]


def layer_inputs(sd: dict[str, torch.Tensor], xs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [F.relu(F.conv2d(x, sd["conv.weight"], sd["conv.bias"], padding=1)) for x in xs]


def test_calibration_op_names_the_kinds_calibration_computes_and_calls_the_others() -> None:
    assert calibration_op("linear", {}) == ("linear", None, None)
    geometry = {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    assert calibration_op("conv2d", geometry) == ("conv2d", geometry, None)
    call, kwargs, axis = calibration_op("conv_transpose2d", {**geometry, "output_padding": (1, 1)})
    assert kwargs is None and axis == 1
    x, w = torch.randn(2, 3, 4, 4), torch.randn(5, 3, 3, 3)
    torch.testing.assert_close(call(x, w), F.conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=1,
                                                               output_padding=1))
    with pytest.raises(tdsl.TdslError, match="no call for weighted ops of kind 'conv3d'"):
        calibration_op("conv3d", geometry)


def test_quantize_calibrates_a_conv_transpose2d_against_its_own_output_error(fp32) -> None:
    xs = batches()
    frozen = tdsl.quantize(SOURCE, precision="ternary", policy="all", weights=fp32, calibrate=xs)
    report = frozen.calibration
    assert list(report.layers) == ["conv.weight", "up.weight", "fc.weight"]
    cal = report.layers["up.weight"]
    assert cal.threshold.shape == (4,) and cal.error_after <= cal.error_before
    trits, scale = frozen.ternary_weights()["up.weight"]
    assert abs((trits == 0).float().mean().item() - cal.sparsity) < 1e-6
    # The error the report gives is F.conv_transpose2d's on the layer's float inputs.
    w, wq = fp32["up.weight"], trits.float() * scale.reshape(-1, 1, 1, 1)
    hs = layer_inputs(fp32, xs)
    error = sum(float(((up(h, w) - up(h, wq)).double() ** 2).sum()) for h in hs)
    reference = sum(float((up(h, w).double() ** 2).sum()) for h in hs)
    assert error == pytest.approx(cal.error_after, rel=1e-3)
    assert reference == pytest.approx(cal.reference, rel=1e-4)


def test_calibrate_recipe_installs_the_calibrated_delta_on_a_conv_transpose2d(fp32) -> None:
    config = TrainConfig(epochs=1, batch_size=8, progress=False, health="off", seed=0)
    x = torch.cat(batches())
    run = prepare(SOURCE, "calibrate", config, (x, torch.zeros(len(x), dtype=torch.long)), policy="all",
                  init=fp32)
    cal = run.calibration["up.weight"]
    assert cal.error_after <= cal.error_before
    w = run.module.up.weight.detach()
    delta = torch.as_tensor(np.asarray(cal.multiplier, dtype=np.float32)) * w.abs().double().mean(
        dim=(1, 2, 3)).float()
    trits, alpha, _ = ternarize_torch(w, "fixed", True, threshold=delta)
    h = layer_inputs(fp32, [x[:4]])[0]
    with torch.no_grad():
        torch.testing.assert_close(run.module.up(h), up(h, trits * alpha.reshape(-1, 1, 1, 1))
                                   + run.module.up.bias.reshape(1, -1, 1, 1), rtol=1e-5, atol=1e-5)
