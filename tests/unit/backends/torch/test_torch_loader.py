"""loader: emitted source becomes an importable module; the entry layer is built from IR."""
from __future__ import annotations

import copy
import io
import pickle
import sys

import torch
from xdsl.parser import Parser

from tdsl.backends.torch.emit import emit_module
from tdsl.backends.torch.loader import instantiate, load_source
from tdsl.dialects.context import make_context

NET = """
builtin.module attributes {tdsl.entry = @Scale_1} {
  tdsl.layer @Scale layer "Scale" params {k = 2.0 : f64} {
    tdsl.param @w : tensor<3xf32> {init = "ones", kind = "param"}
    tdsl.forward (%x : tensor<?x3xf32>) -> tensor<?x3xf32> {
      %w = tdsl.get_param @w : tensor<3xf32>
      %y = tdsl.mul %x, %w : (tensor<?x3xf32>, tensor<3xf32>) -> tensor<?x3xf32>
      tdsl.return %y : tensor<?x3xf32>
    }
  }
  tdsl.layer @Scale_1 layer "Scale" params {k = 3.0 : f64} {
    tdsl.param @w : tensor<3xf32> {init = "zeros", kind = "param"}
    tdsl.forward (%x : tensor<?x3xf32>) -> tensor<?x3xf32> {
      %w = tdsl.get_param @w : tensor<3xf32>
      %y = tdsl.add %x, %w : (tensor<?x3xf32>, tensor<3xf32>) -> tensor<?x3xf32>
      tdsl.return %y : tensor<?x3xf32>
    }
  }
}
"""


def test_instantiate_builds_the_entry_specialisation() -> None:
    module = Parser(make_context(), NET).parse_module()
    model = instantiate(module, emit_module(module))
    assert type(model).__name__ == "Scale" and model._spec == 1
    assert model.w.tolist() == [0.0, 0.0, 0.0]
    x = torch.randn(2, 3)
    torch.testing.assert_close(model(x), x)


def test_loaded_modules_are_fresh_registered_and_picklable() -> None:
    module = Parser(make_context(), NET).parse_module()
    source = emit_module(module)
    a, b = load_source(source, "net"), load_source(source, "net")
    assert a is not b and a.__name__ != b.__name__
    assert sys.modules[a.__name__] is a
    model = a.Scale(k=2.0)
    with torch.no_grad():
        model.w.mul_(5)
    restored = pickle.loads(pickle.dumps(model))
    assert type(restored) is a.Scale and restored.w.tolist() == [5.0, 5.0, 5.0]
    assert copy.deepcopy(model).w.tolist() == [5.0, 5.0, 5.0]
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=False).w.tolist() == [5.0, 5.0, 5.0]


def test_tracebacks_show_emitted_lines() -> None:
    import inspect

    loaded = load_source("def f():\n    return 42\n", "tiny")
    assert "return 42" in inspect.getsource(loaded.f)
