"""The one place where DSL names become Python identifiers in emitted source.

DSL names are user text: a layer called `torch`, a weight called `class` or an instance
called `blocks.0` must neither break the emitted module nor reach into its namespace.
`py_ident` maps every name to an ASCII identifier that is not a keyword, not reserved in
the namespace it lands in and not already taken there: it replaces characters that cannot
appear in an identifier, appends `_` to a reserved name and `_2`, `_3`, … to a taken one,
so valid, unreserved DSL names stay as they are and state-dict keys equal the DSL names
whenever they can.
"""
from __future__ import annotations

import builtins
import keyword
import re

import torch.nn as nn

MODULE_GLOBALS = frozenset({"math", "torch", "nn", "F", "_rt", "LAYERS"})
"""Names the emitted module itself binds at top level."""

HELPER_ATTRIBUTES = frozenset({"_SPECS", "_spec"})
"""Attributes the emitted classes define besides the DSL's (plus `_init_<k>`, `_forward_<k>`)."""

_HELPER_METHOD = re.compile(r"_(init|forward)_\d+")

GLOBAL = frozenset(dir(builtins)) | MODULE_GLOBALS
"""Reserved for class names: module globals and builtins the emitted code may use."""

LOCAL = GLOBAL | {"self"}
"""Reserved for forward/`__init__` arguments and local variables."""

ATTRIBUTE = frozenset(dir(nn.Module())) | HELPER_ATTRIBUTES
"""Reserved for attributes of an emitted `nn.Module` (params, buffers, children)."""


def _reserved(ident: str, reserved: frozenset[str]) -> bool:
    if keyword.iskeyword(ident) or ident in reserved or _HELPER_METHOD.fullmatch(ident):
        return True
    # `__x` would be name-mangled inside a class body and `__x__` belongs to Python; a name
    # ending in three underscores is neither.
    return ident.startswith("__") and not ident.endswith("___")


def py_ident(name: str, reserved: frozenset[str], taken: set[str]) -> str:
    """A fresh identifier for DSL `name` in a namespace; records it in `taken`.

    Deterministic: the same names offered in the same order give the same identifiers.
    """
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not ident or ident[0].isdigit():
        ident = "_" + ident
    while _reserved(ident, reserved):
        ident += "_"
    base, n = ident, 1
    while ident in taken:
        n += 1
        ident = f"{base}_{n}"
        while _reserved(ident, reserved):
            ident += "_"
    taken.add(ident)
    return ident
