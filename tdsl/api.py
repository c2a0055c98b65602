"""The Python API's `compile` and `CompiledModel`, where users found them; they live in
`tdsl.model.compiled` (the objects users hold are in `tdsl/model/`)."""
from tdsl.model.compiled import CompiledModel, compile, print_ir, resolve_source

__all__ = ["CompiledModel", "compile", "print_ir", "resolve_source"]
