"""names.py_ident: every DSL name becomes a safe, unique, deterministic identifier."""
from __future__ import annotations

import keyword

import pytest

from tdsl.backends.torch.names import ATTRIBUTE, GLOBAL, LOCAL, py_ident


@pytest.mark.parametrize(
    ("name", "reserved", "expected"),
    [
        ("conv1", ATTRIBUTE, "conv1"),
        ("print", ATTRIBUTE, "print"),
        ("class", ATTRIBUTE, "class_"),
        ("forward", ATTRIBUTE, "forward_"),
        ("training", ATTRIBUTE, "training_"),
        ("parameters", ATTRIBUTE, "parameters_"),
        ("_spec", ATTRIBUTE, "_spec_"),
        ("_forward_3", ATTRIBUTE, "_forward_3_"),
        ("__import__", ATTRIBUTE, "__import___"),
        ("__hidden", ATTRIBUTE, "__hidden___"),
        ("blocks.0", ATTRIBUTE, "blocks_0"),
        ("0", ATTRIBUTE, "_0"),
        ("", ATTRIBUTE, "_"),
        ("torch", GLOBAL, "torch_"),
        ("nn", GLOBAL, "nn_"),
        ("F", GLOBAL, "F_"),
        ("print", GLOBAL, "print_"),
        ("LAYERS", GLOBAL, "LAYERS_"),
        ("Net", GLOBAL, "Net"),
        ("self", LOCAL, "self_"),
        ("lambda", LOCAL, "lambda_"),
        ("super", LOCAL, "super_"),
        ("x\n import os", LOCAL, "x__import_os"),
        ("café", LOCAL, "caf_"),
    ],
)
def test_py_ident(name: str, reserved: frozenset[str], expected: str) -> None:
    assert py_ident(name, reserved, set()) == expected


def test_clashes_resolve_in_offer_order() -> None:
    taken: set[str] = set()
    idents = [py_ident(n, ATTRIBUTE, taken) for n in ("a.b", "a_b", "class", "class_", "a-b")]
    assert idents == ["a_b", "a_b_2", "class_", "class__2", "a_b_3"]
    assert taken == set(idents)


def test_numbered_clash_that_is_reserved_gets_underscores() -> None:
    taken = {"_forward"}
    assert py_ident("_forward", ATTRIBUTE, taken) == "_forward_2_"


@pytest.mark.parametrize("reserved", [ATTRIBUTE, GLOBAL, LOCAL])
def test_results_are_plain_identifiers(reserved: frozenset[str]) -> None:
    for name in [*keyword.kwlist, *keyword.softkwlist, *sorted(reserved)[:200], "a b", "1x", "__x__"]:
        ident = py_ident(name, reserved, set())
        assert ident.isidentifier() and ident.isascii() and not keyword.iskeyword(ident)
        assert ident not in reserved
