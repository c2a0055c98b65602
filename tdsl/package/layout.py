"""A package's tensors and inputs/outputs, where package code found them; they live in
`tdsl.dialects.layout` (read from the IR alone, so a backend can use them too)."""
from tdsl.dialects.layout import TensorSpec, dtype_name, example_shapes, expected_tensors, io_names, io_spec

__all__ = ["TensorSpec", "dtype_name", "example_shapes", "expected_tensors", "io_names", "io_spec"]
