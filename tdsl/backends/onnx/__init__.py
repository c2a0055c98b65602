"""ONNX backend: builds the ONNX graph from the kernel-level IR with the `onnx` helper API
(no torch tracing). See `tdsl.backends.onnx.emit` for the graph forms and
`tdsl.backends.onnx.tensors` for the INT2 layout."""
from tdsl.backends.onnx.export import OnnxExport, export_onnx
from tdsl.backends.onnx.verify import OnnxDiff, verify_onnx

__all__ = ["OnnxExport", "OnnxDiff", "export_onnx", "verify_onnx"]
