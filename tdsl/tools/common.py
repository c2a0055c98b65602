"""Helpers both command-line tools share: parameters on the command line, safe output."""
from __future__ import annotations

import json
import os
import tempfile

from tdsl.errors import TdslError


def parse_param(text: str) -> tuple[str, object]:
    """`NAME=VALUE`; VALUE is read as JSON when it parses (ints, floats, true/false, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TdslError(f"--param expects NAME=VALUE, but got '{text}'")
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def write_atomic(path: str, text: str) -> None:
    """Write via a temporary file in the target's folder, renamed into place on success."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
