"""The one storage layout (`tdsl.dialects.storage.storage_layout`): what each stored tensor of a
program is, read from the IR without torch; under the torch backend's names its keys, dtypes and
shapes are the emitted frozen module's state dict, and under the IR's names (what packages
check) they differ only where the emitter renames an attribute."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import tdsl
from tdsl.backends.torch.emit import emit_module
from tdsl.backends.torch.freeze import storage_layout as torch_layout
from tdsl.backends.torch.loader import instantiate
from tdsl.dialects.storage import IR_PATHS, storage_layout
from tdsl.model.compiled import frozen_program
from tdsl.runtime.packing import packed_shape

TERNARY = "shape-infer,ternarize{policy=all}"
UP = """layer Up() {
    let conv = Conv2d(3, 8, kernel=3, padding=1)
    let up = ConvTranspose2d(8, 4, kernel=3, stride=2, padding=1, output_padding=1, groups=2)
    let fc = Linear(4 * 12 * 12, 5)
    fn forward(x: Tensor[float32, N, 3, 6, 6]) -> Tensor[float32, N, 5] {
        return fc(flatten(up(relu(conv(x))), start_dim=1))
    }
}
"""

# `type` is an nn.Module attribute: the emitter names that param `type_`.
RENAMED = """layer Odd() {
    let type: Tensor[float32, 4, 3] = kaiming_uniform()
    fn forward(x: Tensor[float32, N, 3]) -> Tensor[float32, N, 4] {
        return linear(x, type)
    }
}
"""


def _frozen_module(source: str, fmt: str = "2bit"):
    compiled = tdsl.compile(source, pipeline=TERNARY)
    return frozen_program(compiled, fmt).module


@pytest.mark.parametrize("fmt", ["2bit", "base3"])
def test_what_a_ternary_conv_transpose2d_program_stores(fmt):
    layout = storage_layout(_frozen_module(UP, fmt))
    packed = layout["up.weight_packed"]
    assert (packed.role, packed.precision, packed.weight, packed.latent_key) == ("packed", "ternary", "up.weight",
                                                                                 "up.weight")
    assert packed.shape == (4, 4, 3, 3) and packed.format == fmt
    assert (packed.dtype, packed.stored_shape) == ("uint8", tuple(packed_shape((4, 4, 3, 3), fmt)))
    assert packed.op == "conv_transpose2d"
    assert packed.op_kwargs == {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 2,
                                "output_padding": (1, 1)}
    scale = layout["up.weight_scale"]
    assert (scale.role, scale.weight, scale.dtype, scale.stored_shape) == ("scale", "up.weight", "float32", (4,))
    assert layout["up.bias"].role == "bias" and layout["fc.weight_packed"].op == "linear"


@pytest.mark.parametrize("source", [UP, RENAMED], ids=["conv-transpose", "renamed"])
@pytest.mark.parametrize("frozen", [True, False])
def test_under_the_torch_names_it_is_the_emitted_state_dict(source, frozen):
    module = _frozen_module(source) if frozen else tdsl.compile(source, pipeline=TERNARY).module
    state = instantiate(module, emit_module(module, frozen)).state_dict()
    layout = torch_layout(module, frozen=frozen)
    assert {k: (s.dtype, s.stored_shape) for k, s in layout.items()} == {
        k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in state.items()}


def test_the_ir_names_differ_only_where_the_emitter_renames():
    module = tdsl.compile(RENAMED, pipeline=TERNARY).module
    assert list(storage_layout(module, False, IR_PATHS)) == ["type"]
    assert list(torch_layout(module, False)) == ["type_"]
    frozen = _frozen_module(RENAMED)
    assert list(storage_layout(frozen)) == list(torch_layout(frozen)) == ["type_packed", "type_scale"]
    same = _frozen_module(UP)
    assert list(storage_layout(same)) == list(torch_layout(same))


def test_the_layout_needs_no_torch():
    code = textwrap.dedent("""
        import sys
        import tdsl
        from tdsl.dialects.storage import storage_layout
        layout = storage_layout(tdsl.compile("lenet", pipeline="shape-infer,ternarize,pack").module)
        print("torch" in sys.modules, layout["fc1.weight_packed"].dtype)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "uint8"]
