"""Source locations on IR: between xDSL location attributes and `tdsl.errors.SourceLoc`.

IR generation stamps every op with the DSL position it came from (`set_loc`); passes and
tools read it back (`loc_of`) to put `file:line:col` on their diagnostics.
"""
from __future__ import annotations

from xdsl.dialects.builtin import CallSiteLoc, FileLineColLoc, FusedLoc, IntAttr, NameLoc, StringAttr
from xdsl.ir import Attribute, Operation

from tdsl.errors import SourceLoc


def source_loc(location: Attribute) -> SourceLoc | None:
    """The file position inside a location attribute (a call site reports its callee)."""
    if isinstance(location, FileLineColLoc):
        return SourceLoc(location.filename.data, location.line.data, location.column.data)
    if isinstance(location, NameLoc):
        return source_loc(location.location)
    if isinstance(location, CallSiteLoc):
        return source_loc(location.callee)
    if isinstance(location, FusedLoc):
        for inner in location.locations.data:
            if (found := source_loc(inner)) is not None:
                return found
    return None


def loc_of(op: Operation) -> SourceLoc | None:
    """The DSL position an op came from, or None if it carries no file location."""
    return source_loc(op.location)


def set_loc(op: Operation, loc: SourceLoc | None) -> Operation:
    """Stamp `op` with a `loc("file":line:col)`; returns `op` for chaining."""
    if loc is not None:
        op.location = file_loc(loc)
    return op


def file_loc(loc: SourceLoc) -> FileLineColLoc:
    return FileLineColLoc(StringAttr(loc.file), IntAttr(loc.line), IntAttr(loc.col))
