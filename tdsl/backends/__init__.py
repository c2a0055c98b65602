"""Backends consume the IR: torch (emitted source), numba (kernel plan), onnx."""
