"""Turn emitted source into live classes and build the entry layer's module.

Each load gets a fresh module object registered in `sys.modules` under a unique name, so
pickle, `copy.deepcopy` and `torch.export` can find the classes again, and its text in
`linecache`, so tracebacks and `inspect.getsource` show the emitted lines.
"""
from __future__ import annotations

import itertools
import linecache
import re
import sys
import types

import torch.nn as nn
from xdsl.dialects.builtin import ModuleOp

from tdsl.backends.torch.plan import param_values
from tdsl.dialects.tdsl import entry_layer

_counter = itertools.count()


def load_source(source: str, name: str) -> types.ModuleType:
    """Execute emitted `source` as a new module named after `name` (made unique)."""
    module_name = f"tdsl_generated_{re.sub(r'[^A-Za-z0-9_]', '_', name)}_{next(_counter)}"
    filename = f"<tdsl-generated {module_name}>"
    module = types.ModuleType(module_name)
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    sys.modules[module_name] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def instantiate(module_ir: ModuleOp, source: str) -> nn.Module:
    """Load `source` (emitted from `module_ir`) and build the entry specialisation."""
    from tdsl.signature import forward_signature, torch_pre_hook

    entry = entry_layer(module_ir)
    loaded = load_source(source, entry.layer.data)
    root = loaded.LAYERS[entry.layer.data](*param_values(entry))
    root.register_forward_pre_hook(torch_pre_hook(forward_signature(module_ir)))
    return root
