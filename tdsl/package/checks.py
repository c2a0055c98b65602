"""Bounded reading of what a package holds, and checks of its values against its program.

A package comes from anyone, so nothing in it may make the reader fail on its own terms: a
JSON document nested 200,000 deep (Python's parser recurses), an integer of 5,000 digits
(`int()` refuses past 4,300), a safetensors header naming a dtype numpy lacks (`F8_E4M3`),
NaN in the weights or a negative batch-norm variance (which load silently and compute
garbage), or metadata that disagrees with the stored program (`precision` edited to
"fp32"). Each is a `TdslError` naming the file and what is wrong.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tdsl.errors import TdslError

MAX_JSON_DEPTH = 64
"""A config nests about 5 deep; a safetensors header 3."""
MAX_INT_DIGITS = 30
"""The largest integer a package records is a byte count or a dimension."""
MAX_NAME_BYTES = 255
"""The longest file name most file systems take (NAME_MAX)."""
SAFETENSORS_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "I8": "int8", "I16": "int16",
                      "I32": "int32", "I64": "int64", "U8": "uint8", "BOOL": "bool"}
"""The safetensors dtypes a package may hold (those with a numpy dtype; the layout says which)."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (strings skipped), without recursing."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def load_json(text: str, where: Path | str) -> Any:
    """Parse JSON with bounded nesting and integer length, refusing NaN and Infinity."""
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise TdslError(f"{where}: JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})")

    def integer(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            raise TdslError(f"{where}: an integer of {len(digits.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
        return int(digits)

    def number(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise TdslError(f"{where}: the number {text[:40]} is beyond a float")
        return value

    def constant(name: str) -> float:
        raise TdslError(f"{where}: {name} is not a JSON number")

    try:
        return json.loads(text, parse_int=integer, parse_float=number, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise TdslError(f"{where}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def check_name(name: str, where: Path | str, what: str) -> None:
    """A file name the file system can hold (the OS would fail with 'File name too long')."""
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise TdslError(f"{where}: {what} has a name of {len(name.encode('utf-8', 'surrogatepass'))} bytes "
                        f"(at most {MAX_NAME_BYTES})")


def check_safetensors_header(path: Path, data: bytes) -> None:
    """The header of a safetensors file: a bounded JSON object whose tensors all have a dtype
    a package may hold (`safetensors.numpy` fails with a KeyError on the others)."""
    if len(data) < 8:
        raise TdslError(f"{path}: not a valid safetensors file (shorter than its 8-byte header length)")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise TdslError(f"{path}: not a valid safetensors file (its header length {size} runs past the end)")
    try:
        text = data[8:8 + size].decode("utf-8")
    except UnicodeDecodeError:
        raise TdslError(f"{path}: not a valid safetensors file (its header is not UTF-8)") from None
    header = load_json(text, f"{path}: not a valid safetensors file: its header")
    if not isinstance(header, dict):
        raise TdslError(f"{path}: not a valid safetensors file (its header is not a JSON object)")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if dtype not in SAFETENSORS_DTYPES:
            raise TdslError(f"{path}: tensor {name[:80]!r} has dtype {str(dtype)[:40]!r}; a tdsl package holds "
                            f"{', '.join(SAFETENSORS_DTYPES)} only")


def check_values(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Finite floats everywhere, and no negative batch-norm variance."""
    for key, a in arrays.items():
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise TdslError(f"{path}: tensor '{key}' holds {a[index]} at index {list(index)}; a package's "
                            "weights must be finite")
        if key.rsplit(".", 1)[-1] == "running_var" and a.size and (a < 0).any():
            index = tuple(int(i) for i in np.argwhere(a < 0)[0])
            raise TdslError(f"{path}: tensor '{key}' (a batch-norm variance) is negative ({a[index]}) at index "
                            f"{list(index)}")


def stored_precisions(module: ModuleOp) -> dict[str, int]:
    """How many weights of each stored precision a frozen program holds (packed ternary, and
    the fp16 / int8 precisions recorded on kept params), counted per instance: a layer used
    several times stores its weights once per use (`layout.expected_tensors`), as the
    `precision.weights` section lists them."""
    from tdsl.dialects.storage import PACKED_SUFFIX
    from tdsl.package.layout import expected_tensors

    counts = {"ternary": 0, "fp16": 0, "int8": 0}
    for key, spec in expected_tensors(module).items():
        if key.endswith(PACKED_SUFFIX):
            counts["ternary"] += 1
        elif spec.dtype == "float16":
            counts["fp16"] += 1
        elif spec.dtype == "int8":
            counts["int8"] += 1
    return counts


def check_precision(path: Path, config: dict[str, Any], module: ModuleOp) -> None:
    """The `precision` section agrees with the stored program: `weights` lists as many ternary,
    fp16 and int8 weights as the program stores, `packed` says whether it packs any, and the
    policy's `precision` is one its weights have (or "mixed", "custom")."""
    policy = config.get("precision")
    if policy is None:
        return
    if not isinstance(policy, dict):
        raise TdslError(f"{path}: field 'precision' must be an object, got {type(policy).__name__}")
    counts = stored_precisions(module)
    found = ", ".join(f"{n} {p}" for p, n in counts.items() if n) or "no ternary, fp16 or int8 weight"
    weights = policy.get("weights")
    if not isinstance(weights, dict) or not all(isinstance(v, str) for v in weights.values()):
        raise TdslError(f"{path}: field 'precision.weights' must map weight names to precisions")
    for precision, n in counts.items():
        listed = sum(1 for v in weights.values() if v == precision)
        if listed != n:
            raise TdslError(f"{path}: field 'precision.weights' lists {listed} {precision} weight(s), but the stored "
                            f"program holds {found}")
    claimed = policy.get("precision")
    if claimed not in ("mixed", "custom") and claimed not in set(weights.values()):
        raise TdslError(f"{path}: field 'precision.precision' says {str(claimed)[:40]!r}, but the stored program "
                        f"holds {found} (its weights are {', '.join(sorted(set(weights.values())))})")
    if claimed == "mixed" and not counts["ternary"]:
        raise TdslError(f"{path}: field 'precision.precision' says 'mixed', but the stored program holds {found}")
    if "packed" in policy and policy["packed"] is not (counts["ternary"] > 0):
        raise TdslError(f"{path}: field 'precision.packed' says {policy['packed']!r}, but the stored program "
                        f"holds {found}")
