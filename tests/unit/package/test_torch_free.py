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
