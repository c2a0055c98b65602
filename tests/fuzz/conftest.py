"""Loads `fuzzing.py` (the generators and the oracle) by path: with pytest's importlib mode
this folder is not on sys.path."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("fuzzing", Path(__file__).with_name("fuzzing.py"))
assert _spec is not None and _spec.loader is not None
fuzzing = importlib.util.module_from_spec(_spec)
sys.modules["fuzzing"] = fuzzing
_spec.loader.exec_module(fuzzing)
