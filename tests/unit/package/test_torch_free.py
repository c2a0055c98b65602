"""Loading a package and reading its weights imports no torch (checked in a fresh process,
where no earlier import can hide it)."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_load_and_read_arrays_without_torch(lenet_package):
    code = textwrap.dedent(f"""
        import sys
        import tdsl
        pkg = tdsl.load({str(lenet_package)!r})
        total = sum(int(a.sum()) for a in pkg.arrays.values() if a.dtype.kind == "u")
        assert pkg.arrays["fc1.weight_packed"].dtype.name == "uint8"
        assert pkg.compiled.entry == "LeNet" and "pack" in pkg.compiled.passes
        tdsl.compile("resnet18", params={{"cifar_stem": True}})
        print("torch" in sys.modules, total > 0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


SLIM = """
import importlib.abc
import sys

OPTIONAL = {"torch", "onnx", "onnxruntime", "numba_cuda", "tqdm", "matplotlib", "sklearn", "mnist1d",
            "huggingface_hub", "github", "yaml"}


class Refuse(importlib.abc.MetaPathFinder):  # as if only the core dependencies were installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Refuse())
import numpy as np
import tdsl
from tdsl.tools.tdsl_cli import main

pkg = tdsl.load(sys.argv[1])
y = pkg.deploy("numba")(np.zeros((2, 1, 8, 8), np.float32))
assert y.shape == (2, 10), y.shape
assert main(["compile", "lenet"]) == 0
assert main(["quantize", "lenet"]) == 1  # needs torch: a diagnostic naming the extra, not a traceback
print("ok")
"""


def test_the_core_install_loads_and_deploys_a_package(lenet_package):
    """The deployment core alone (numpy, xdsl, lark, numba, safetensors, threadpoolctl): what
    `pip install tdsl` gives. Every optional dependency is made unimportable in a fresh process."""
    out = subprocess.run([sys.executable, "-c", SLIM, str(lenet_package)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
    assert "pip install 'tdsl[torch]'" in out.stderr and "Traceback" not in out.stderr
