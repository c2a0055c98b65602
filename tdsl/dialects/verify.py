"""Verifying a module so that a failure is a located TdslError (shared by the CLIs, the API and lowering)."""
from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import VerifyException

from tdsl.dialects.locations import loc_of
from tdsl.errors import TdslError


def verify_module(module: ModuleOp) -> None:
    """Verify `module`; a failure becomes a TdslError at the failing op's DSL location.

    xDSL's VerifyException does not say which op failed, so each op is verified on its
    own (innermost first would repeat work; op order is enough to find the first).
    """
    try:
        module.verify()
        return
    except VerifyException as exc:
        first = exc
    for op in module.walk():
        try:
            op.verify(verify_nested_ops=False)
        except VerifyException as e:
            raise TdslError(str(e).splitlines()[0], loc_of(op)) from None
    raise TdslError(str(first).splitlines()[0], loc_of(module))
