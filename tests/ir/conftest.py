"""Collect `.mlir`/`.tdsl` files with `RUN:` lines as pytest items (lit-style FileCheck tests).

`%s` is the test file; each RUN line runs in bash with pipefail, `not CMD` inverts an
exit status, and `REQUIRES: mlir-opt` skips a file when `mlir-opt-19` is not on PATH.
The interpreter's bin directory leads PATH so `tdsl-opt` and `filecheck` resolve to it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FEATURES = {"mlir-opt"} if shutil.which("mlir-opt-19") else set()
ENV = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.File | None:
    if file_path.suffix in (".mlir", ".tdsl") and "RUN:" in file_path.read_text(encoding="utf-8"):
        return FileCheckFile.from_parent(parent, path=file_path)
    return None


class FileCheckFile(pytest.File):
    def collect(self):
        yield FileCheckItem.from_parent(self, name=self.path.name)


class FileCheckItem(pytest.Item):
    def runtest(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        missing = set(re.findall(r"REQUIRES:\s*(\S+)", text)) - FEATURES
        if missing:
            pytest.skip(f"missing feature: {', '.join(sorted(missing))}")
        runs = re.findall(r"RUN:\s*(.*)$", text, re.M)
        for run in runs:
            cmd = 'set -o pipefail; not() { ! "$@"; }; ' + run.replace("%s", str(self.path))
            p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=ENV)
            if p.returncode != 0:
                raise FileCheckFailure(run, p.stdout, p.stderr)

    def repr_failure(self, excinfo, style=None) -> str:
        if isinstance(excinfo.value, FileCheckFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"filecheck: {self.path.name}"


class FileCheckFailure(Exception):
    def __init__(self, run: str, stdout: str, stderr: str):
        super().__init__(f"RUN: {run}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
