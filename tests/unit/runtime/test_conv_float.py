"""The kept-precision conv kernel (tdsl.runtime.conv_float) against torch's float64 conv.

Shapes cover what the micro-kernel blocks over: positions not a multiple of the 64-wide
tile, channel counts not a multiple of 4, strides, padding, dilation, groups, several
images, a residual and an activation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tdsl.runtime import conv_float as CF
from tdsl.runtime.activations import code_of

pytestmark = pytest.mark.skipif(not CF.available(), reason="this CPU has no AVX-512F")

# (N, C, H, W, O, k, stride, padding, dilation, groups)
CASES = [
    (1, 3, 32, 32, 64, 7, 2, 3, 1, 1),   # the ResNet stem, smaller
    (2, 5, 9, 11, 6, 3, 1, 1, 1, 1),     # 99 positions, 6 channels (a padded block)
    (1, 4, 10, 10, 8, 3, 2, 1, 1, 2),    # grouped, strided
    (1, 3, 13, 7, 5, 3, 1, 2, 2, 1),     # dilated, asymmetric image
]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("act", ["none", "relu6"])
def test_matches_torch_within_float32_rounding(case, act: str) -> None:
    N, C, H, W, O, k, s, p, d, g = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((O, C // g, k, k)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                     torch.from_numpy(b).double(), stride=s, padding=p, dilation=d, groups=g)
    res = rng.standard_normal(ref.shape).astype(np.float32)
    ref = ref + torch.from_numpy(res).double()
    if act == "relu6":
        ref = ref.clamp(0, 6)
    y = np.full(ref.shape, np.nan, np.float32)
    CF.conv2d_float_into(y, x, CF.padded_weights(w, g), (k, k, s, s, p, p, d, d), b, res, code_of(act))
    want = ref.numpy()
    assert np.isfinite(y).all()  # every output position written, padding tiles included
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-5 * max(1.0, float(np.abs(want).max())))
