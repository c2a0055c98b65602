"""Writing a package from a DSL program and numpy arrays: what an importer produces, no torch.

`tdsl.save` takes a `FrozenModel` (torch tensors); an importer has numpy arrays that already
are the frozen storage (packed trits, scales, fp16 heads), so it writes the same files
(schema in docs/PACKAGE.md) itself: it compiles the program with the pipeline as `tdsl.load`
will, checks the arrays against the program's declarations, writes everything into a
temporary folder, loads that folder with `tdsl.load` (the loader's checks are the test) and
only then renames it into place. Any failure removes the temporary folder: nothing is left.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tdsl.errors import TdslError
from tdsl.package import CARD_FILE, CONFIG_FILE, PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION, WEIGHTS_FILE
from tdsl.package.files import plain_mode, sha256_file
from tdsl.package.layout import expected_tensors, io_spec
from tdsl.package.reader import build_frozen_program, check_arrays, normalized_ir


def _is_package(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("format") == PACKAGE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def refuse_existing(dest: Path, overwrite: bool) -> None:
    """A TdslError unless `dest` is free, or a package that `overwrite` may replace."""
    if dest.exists() and not (overwrite and dest.is_dir() and not dest.is_symlink() and _is_package(dest)):
        raise TdslError(f"{dest}: already exists" + ("; pass --force (overwrite=True) to replace a package"
                                                     if not overwrite else " and is not a tdsl package"))


def memory_table(arrays: Mapping[str, np.ndarray]) -> str:
    """Bytes by stored dtype, as the card's markdown table."""
    kinds: dict[str, int] = {}
    for a in arrays.values():
        kinds[str(a.dtype)] = kinds.get(str(a.dtype), 0) + a.nbytes
    rows = ["| stored as | bytes |", "|---|---:|"] + [f"| {k} | {v:,} |" for k, v in sorted(kinds.items())]
    return "\n".join(rows + [f"| **total** | **{sum(kinds.values()):,}** |"])


def write_package(dest: str | os.PathLike[str], *, source: str, source_file: str, zoo_name: str | None,
                  entry: str, params: dict[str, Any], pipeline: str, arrays: dict[str, np.ndarray],
                  precision: dict[str, Any], name: str, description: str, extra_config: dict[str, Any],
                  extra_files: Mapping[str, Path], overwrite: bool = False) -> Path:
    """Write the package and return its path (see the module docstring).

    `extra_files` maps a plain file name in the package to a file to copy there (a
    tokenizer); `extra_config` adds fields to config.json (never the ones the loader reads).
    """
    from tdsl.package.reader import load
    from tdsl.support.version import __version__
    from safetensors.numpy import save_file

    from tdsl.package.card import write_model_card
    from tdsl.runtime.packing import PACK_FORMAT_VERSION

    out = Path(dest)
    refuse_existing(out, overwrite)
    compiled = build_frozen_program(source, entry=entry, params=params, pipeline=pipeline, format="2bit")
    check_arrays(Path("<imported weights>"), arrays, expected_tensors(compiled.module))
    io = io_spec(compiled.module)
    config: dict[str, Any] = {
        "format": PACKAGE_FORMAT, "format_version": PACKAGE_FORMAT_VERSION, "tdsl_version": __version__,
        "model_type": "tdsl", "architectures": [entry], "pipeline_tag": "text-generation", "name": name,
        "model": {"zoo_name": zoo_name, "source_file": source_file, "entry": entry, "params": params,
                  "source": source},
        "pipeline": pipeline, "freeze": {"format": "2bit"}, "precision": precision, **io,
        "packed_format": {"name": "2bit", "version": PACK_FORMAT_VERSION},
        "weights": {"file": WEIGHTS_FILE, "sha256": "", "bytes": 0},
        "ir_sha256": hashlib.sha256(normalized_ir(compiled.module).encode("utf-8")).hexdigest(),
        **extra_config,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        os.chmod(tmp, plain_mode(folder=True))
        save_file({k: np.ascontiguousarray(v).reshape(v.shape) for k, v in arrays.items()}, str(tmp / WEIGHTS_FILE),
                  metadata={"format": PACKAGE_FORMAT})
        os.chmod(tmp / WEIGHTS_FILE, plain_mode())
        config["weights"].update(sha256=sha256_file(tmp / WEIGHTS_FILE), bytes=(tmp / WEIGHTS_FILE).stat().st_size)
        for file, origin in extra_files.items():
            shutil.copyfile(origin, tmp / file)
            os.chmod(tmp / file, plain_mode())
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        params_text = ", ".join(f"`{k}={v!r}`" for k, v in params.items())
        write_model_card(
            tmp / CARD_FILE, name=name, description=description,
            architecture=f"Layer `{entry}` of `{source_file}`, parameters {params_text}.\n\nPasses: `{pipeline}`.",
            precision_policy=f"{precision['precision']}: ternary projections (2-bit packed), int8 activations per "
                             "token into each, the embedding at float32 and the LM head at fp16.",
            memory_table_md=memory_table(arrays),
            how_to_load="import tdsl\n\npkg = tdsl.load(\"path/to/this/folder\")\nrunner = pkg.deploy(\"numba\")"
                        "   # torch-free\n# or: tdsl generate path/to/this/folder --prompt \"...\"",
            task="text-generation", tags=("ternary", "quantized", "bitnet"))
        load(tmp)  # the loader's checks, before the package exists under its name
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "package")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
