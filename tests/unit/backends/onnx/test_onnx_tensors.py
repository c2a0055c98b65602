"""INT2 initializers (checked against onnx's own decoder) and the batch-norm fold."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from onnx import TensorProto, numpy_helper

from tdsl.backends.onnx.tensors import fold_bn, int2_tensor, per_channel
from tdsl.errors import TdslError


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_int2_round_trips_every_trit_sequence(n):
    for trits in itertools.product((-1, 0, 1), repeat=n):
        t = np.array(trits, dtype=np.int8)
        tensor = int2_tensor("w", t)
        assert tensor.data_type == TensorProto.INT2
        assert len(tensor.raw_data) == (n + 3) // 4
        np.testing.assert_array_equal(numpy_helper.to_array(tensor).astype(np.int8), t)


def test_int2_bit_layout_is_low_bits_first_twos_complement():
    # trits (+1, 0, -1, 0) -> 0b01, 0b00, 0b11, 0b00 from bit 0 up: 0b00_11_00_01
    assert int2_tensor("w", np.array([1, 0, -1, 0])).raw_data == bytes([0b00110001])
    # the fifth trit starts a new byte, padded with zero codes
    assert int2_tensor("w", np.array([0, 0, 0, 0, -1])).raw_data == bytes([0, 0b11])


def test_int2_keeps_the_shape_and_is_a_quarter_byte_per_trit():
    t = np.random.default_rng(0).integers(-1, 2, size=(8, 3, 3, 3)).astype(np.int8)
    tensor = int2_tensor("w", t)
    assert list(tensor.dims) == [8, 3, 3, 3]
    assert len(tensor.raw_data) == t.size // 4 + (t.size % 4 > 0)
    np.testing.assert_array_equal(numpy_helper.to_array(tensor).astype(np.int8), t)


def test_int2_refuses_values_outside_the_trits():
    with pytest.raises(TdslError, match="must be -1, 0 or 1"):
        int2_tensor("w", np.array([0, 2]))


def test_fold_bn_equals_batch_norm_of_the_biased_output():
    rng = np.random.default_rng(1)
    c = 6
    y = rng.standard_normal((2, c, 4, 4)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    mean, gamma, beta = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.random(c).astype(np.float32) + 0.5
    m, shift = fold_bn(c, b, (mean, var, gamma, beta), 1e-5)
    want = torch.nn.functional.batch_norm(torch.from_numpy(y + b[:, None, None]), torch.from_numpy(mean),
                                          torch.from_numpy(var), torch.from_numpy(gamma), torch.from_numpy(beta),
                                          False, 0.0, 1e-5).numpy()
    got = y * m[:, None, None] + shift[:, None, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fold_bn_without_bn_passes_the_bias_through():
    assert fold_bn(3, None, None, 0.0) == (None, None)
    m, shift = fold_bn(3, np.array([1.0, 2.0, 3.0]), None, 0.0)
    assert m is None
    np.testing.assert_array_equal(shift, [1.0, 2.0, 3.0])


def test_per_channel_broadcasts_a_per_tensor_scale():
    np.testing.assert_array_equal(per_channel(np.float32(0.5), 3), [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(per_channel(np.array([1.0, 2.0]), 2), [1.0, 2.0])
