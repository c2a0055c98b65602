"""The op registry: where each stage finds what an op means, keyed by the op class.

An op class (`tdsl/dialects/`) holds its syntax, verifier and shape rule (`result_dims`).
Everything else about an op is found from that class, never from a string:

| what | where, keyed by op class |
|---|---|
| DSL built-in, signature and defaults | `tdsl.frontend.ops.BUILTINS` (`builtin_of(cls)`) |
| numpy reference, torch call, ONNX builder, epilogue | `tdsl.ops.elementwise` (one row per activation or binary op) |
| torch emission | `tdsl.backends.torch.emit.HANDLERS` |
| Numba CPU step | `tdsl.backends.numba.plan.HANDLERS`, its kernels in `executor.CPU_RUNNERS` |
| CUDA step | `tdsl.backends.numba.gpu.CUDA_RUNNERS` |
| ONNX node builder | `tdsl.backends.onnx.emit` (`singledispatch` on the op class) |

Each backend also names the ops it refuses (`UNSUPPORTED`, with the message users get);
`tests/unit/ops/test_coverage.py` checks that every op of every dialect is in one or the
other. docs/ADDING_AN_OP.md walks through adding one.
"""
