"""Check and load a tdsl package (layout in `tdsl.package`, schema in docs/PACKAGE.md).

Everything is checked before anything is built, and a failure is a `TdslError` naming the
file and the problem: file names in the config must be plain names inside the folder (no
`..`, no separator, no symbolic link), the config must parse and hold the fields of a
format version this tdsl reads, the weights file must have the recorded SHA-256 and parse
as safetensors, and its tensors must be exactly those the compiled program declares (keys,
dtypes, shapes), finite, and the metadata must agree with the program (`tdsl.package.checks`,
which also bounds every read of JSON). The model is rebuilt by compiling the stored DSL source with the stored
pipeline; nothing in the package is unpickled or executed. torch is imported only by
`LoadedPackage.to_torch()` / `to_frozen()`.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tdsl.dialects.storage import FrozenProgram, Stored
from tdsl.errors import TdslError
from tdsl.package import CONFIG_FILE, PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION
from tdsl.package.checks import check_name, check_precision, check_safetensors_header, check_values, load_json
from tdsl.package.files import recover_folder
from tdsl.package.layout import TensorSpec, expected_tensors, io_names

if TYPE_CHECKING:
    from torch import nn

    from tdsl.model.compiled import CompiledModel
    from tdsl.model.frozen import FrozenModel

MAX_CONFIG_BYTES = 16 * 1024 * 1024
"""A config is a few KB of JSON plus the DSL source; anything larger is refused unread."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


def member_path(folder: Path, name: object, what: str) -> Path:
    """`folder/name` for a plain file name that stays inside `folder` and is no symlink."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or os.path.isabs(name):
        raise TdslError(f"{folder / CONFIG_FILE}: {what} {str(name)[:80]!r} is not a plain file name inside the "
                        "package folder; refusing a path that could leave it")
    check_name(name, folder / CONFIG_FILE, what)
    path = folder / name
    if path.is_symlink():
        raise TdslError(f"{path}: {what} is a symbolic link; a package holds plain files only")
    if not path.exists():
        raise TdslError(f"{path}: missing ({what} of the package)")
    if not path.is_file():
        raise TdslError(f"{path}: {what} is not a regular file")
    if Path(os.path.realpath(path)).parent != Path(os.path.realpath(folder)):
        raise TdslError(f"{path}: {what} resolves outside the package folder")
    return path


def read_member(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a package file, opened without following a symlink put there meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1 if limit is not None else -1)
    except OSError as e:
        raise TdslError(f"{path}: cannot read ({e.strerror})") from None
    if limit is not None and len(data) > limit:
        raise TdslError(f"{path}: larger than {limit} bytes; not a tdsl package config")
    return data


def _field(config: dict[str, Any], where: Path, dotted: str, kind: type | tuple[type, ...]) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise TdslError(f"{where}: missing field '{dotted}'")
        value = value[part]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple)
                                                                               else (kind,))):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TdslError(f"{where}: field '{dotted}' must be {names}, got {type(value).__name__}")
    return value


def read_config(path: Path) -> dict[str, Any]:
    """Parse and check config.json (format, version, the fields loading needs)."""
    try:
        config = load_json(read_member(path, MAX_CONFIG_BYTES).decode("utf-8"), path)
    except UnicodeDecodeError:
        raise TdslError(f"{path}: not UTF-8 text") from None
    if not isinstance(config, dict):
        raise TdslError(f"{path}: must hold a JSON object, got {type(config).__name__}")
    if config.get("format") != PACKAGE_FORMAT:
        raise TdslError(f"{path}: not a tdsl package config (field 'format' is {config.get('format')!r}, "
                        f"expected {PACKAGE_FORMAT!r})")
    version = _field(config, path, "format_version", int)
    if version > PACKAGE_FORMAT_VERSION:
        raise TdslError(f"{path}: package format version {version} is newer than this tdsl reads "
                        f"(up to {PACKAGE_FORMAT_VERSION}); upgrade tdsl to load it")
    if version < 1:
        raise TdslError(f"{path}: invalid package format version {version}")
    _field(config, path, "model.source", str)
    _field(config, path, "model.entry", str)
    params = _field(config, path, "model.params", dict)
    _field(config, path, "pipeline", str)
    fmt = _field(config, path, "freeze.format", str)
    from tdsl.runtime.packing import FORMATS

    if fmt not in FORMATS:
        raise TdslError(f"{path}: field 'freeze.format' is {fmt!r}; valid formats are {', '.join(FORMATS)}")
    _field(config, path, "weights.file", str)
    digest = _field(config, path, "weights.sha256", str)
    if not _SHA256.fullmatch(digest):
        raise TdslError(f"{path}: field 'weights.sha256' is not a lower-case hex SHA-256 digest")
    for key in params:
        if not key.isidentifier():
            raise TdslError(f"{path}: parameter name {key!r} in 'model.params' is not an identifier")
    return config


def read_weights(path: Path, sha256: str) -> dict[str, np.ndarray]:
    """The tensors of the weights file, after checking its SHA-256 (numpy, no torch)."""
    data = read_member(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise TdslError(f"{path}: SHA-256 mismatch: config.json records {sha256}, the file has {actual} "
                        "(damaged or altered weights)")
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_safetensors

    check_safetensors_header(path, data)
    try:
        arrays = load_safetensors(data)
    except (SafetensorError, ValueError, TypeError, OverflowError, KeyError) as e:
        raise TdslError(f"{path}: not a valid safetensors file ({e})") from None
    return arrays


def check_arrays(path: Path, arrays: dict[str, np.ndarray], expected: dict[str, TensorSpec]) -> None:
    """Exactly the expected tensors: no key missing, none extra, dtypes and shapes equal."""
    missing = [k for k in expected if k not in arrays]
    extra = sorted(k for k in arrays if k not in expected)

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    if missing:
        raise TdslError(f"{path}: missing tensor{'s' if len(missing) > 1 else ''} {some(missing)} "
                        "that the model declares")
    if extra:
        raise TdslError(f"{path}: unexpected tensor{'s' if len(extra) > 1 else ''} {some(extra)}, "
                        "which the model does not declare")
    for key, spec in expected.items():
        a = arrays[key]
        if a.dtype != np.dtype(spec.dtype) or tuple(a.shape) != spec.shape:
            raise TdslError(f"{path}: tensor '{key}' is {a.dtype} {tuple(a.shape)}, the model declares "
                            f"{spec.dtype} {spec.shape}")


def normalized_ir(module: Any) -> str:
    """The IR text without the `tdsl.source` attribute (where the source was read from)."""
    from tdsl.model.compiled import print_ir

    clone = module.clone()
    clone.attributes.pop("tdsl.source", None)
    return print_ir(clone)


def build_frozen_program(source: str, *, entry: str, params: dict[str, Any], pipeline: str,
                         format: str) -> CompiledModel:
    """Compile `source` with `pipeline`, then freeze the program as `CompiledModel.freeze`
    does (the `tdsl.frozen` mark, and `pack{format}` when there are ternary weights)."""
    from tdsl.model.compiled import compile as compile_
    from tdsl.model.compiled import frozen_program

    text = source if "\n" in source else source + "\n"
    return frozen_program(compile_(text, entry=entry, params=params, pipeline=pipeline), format)


class LoadedPackage(FrozenProgram):
    """A checked package: its config, the rebuilt frozen program and its weights (numpy)."""

    def __init__(self, path: Path, config: dict[str, Any], compiled: CompiledModel, arrays: dict[str, np.ndarray]):
        self.path = path
        self.config = config
        self.compiled = compiled
        self.arrays = arrays

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.compiled.entry)

    @property
    def format(self) -> str:
        return str(self.config["freeze"]["format"])

    @property
    def precision(self) -> str:
        policy = self.config.get("precision")
        return str(policy.get("precision", "")) if isinstance(policy, dict) else ""

    def state_dict(self) -> dict[str, Any]:
        """The weights as torch tensors (copies: the numpy arrays stay untouched)."""
        import torch

        return {k: torch.from_numpy(np.array(a, copy=True)) for k, a in self.arrays.items()}

    def fp32_program(self) -> tuple[str, dict[str, Any], str]:
        """(source, params, entry) of an fp32 package (what `tdsl.import_torch` writes), for
        `tdsl.quantize` and `tdsl.qat`; a quantised package is refused."""
        if self.precision not in ("fp32", ""):
            raise TdslError(f"{self.path}: a {self.precision} package is already quantised; quantise its fp32 "
                            "original (an imported package is fp32)")
        stored = self.config["model"]
        return stored["source"], stored["params"], stored["entry"]

    def program_and_weights(self) -> tuple[Any, dict[str, np.ndarray]]:
        """(the frozen IR, the numpy arrays) for `deploy`: no torch."""
        return self.compiled.module, self.arrays

    def to_torch(self) -> nn.Module:
        """The frozen model as an `nn.Module` in eval mode, with the package's weights."""
        module = self.compiled.to_torch()
        module.load_state_dict(self.state_dict(), strict=True)
        return module.eval()

    @property
    def layout(self) -> dict[str, Stored]:
        """The storage layout of the frozen module by state-dict key (`to_frozen().layout`)."""
        from tdsl.backends.torch.freeze import storage_layout

        return storage_layout(self.compiled.module)

    def to_frozen(self) -> FrozenModel:
        """The `FrozenModel` the package was saved from (for reports and export)."""
        from tdsl.model.frozen import FrozenModel

        return FrozenModel(self.to_torch(), self.compiled, self.layout, self.format, self.precision)

    def deploy(self, backend: str = "numba", *, device: str = "cpu", act_quant: str = "int8",
               path: str | None = None, profile: bool = False, calibrate: Any = None) -> Any:
        """The model on a deployment backend (`tdsl.deploy`), on the packed weights, without torch."""
        from tdsl.model.deploy import deploy

        return deploy(self, backend, device=device, act_quant=act_quant, path=path, profile=profile,
                      calibrate=calibrate)


def rename_legacy_io(config: dict[str, Any], compiled: CompiledModel) -> None:
    """Give the IO of an older package (`input0`, `output0`) today's names (`layout.io_names`),
    in memory, so a loaded package names its output as its ONNX export does."""
    from tdsl.dialects.tdsl import entry_layer

    current = dict(zip(("inputs", "outputs"), io_names(entry_layer(compiled.module).forward)))
    for key, prefix in (("inputs", "input"), ("outputs", "output")):
        entries = config.get(key)
        if not isinstance(entries, list):
            continue
        for entry, name in zip(entries, current[key]):
            if isinstance(entry, dict) and re.fullmatch(prefix + r"\d+", str(entry.get("name", ""))):
                entry["name"] = name


def staged_prefix(dest: Path) -> str:
    """Name prefix of the folder a package is written into before it is moved to `dest`."""
    return f".{dest.name}.tmp-"


def aside_prefix(dest: Path) -> str:
    """Name prefix of the old copy set aside while a replacing save swaps (see `replace_folder`)."""
    return f".{dest.name}.old-"


def load(path: str | os.PathLike[str]) -> LoadedPackage:
    """Check the package folder at `path` and rebuild its model (see the module docstring).

    A replacing save killed between its two renames (where folders cannot be swapped in one
    step) left the old copy aside; it is renamed back first."""
    folder = Path(path)
    for part in folder.parts:
        check_name(part, folder, "the package path")
    recover_folder(folder, aside_prefix(folder))
    if not folder.is_dir():
        raise TdslError(f"{folder}: no such package folder")
    config_path = member_path(folder, CONFIG_FILE, "the config")
    config = read_config(config_path)
    weights_path = member_path(folder, config["weights"]["file"], "the weights file")
    arrays = read_weights(weights_path, config["weights"]["sha256"])
    model = config["model"]
    try:
        compiled = build_frozen_program(model["source"], entry=model["entry"], params=model["params"],
                                        pipeline=config["pipeline"], format=config["freeze"]["format"])
    except TdslError as e:
        raise TdslError(f"{config_path}: the stored model does not compile: {e.message}", e.loc, e.notes) from None
    check_arrays(weights_path, arrays, expected_tensors(compiled.module))
    check_values(weights_path, arrays)
    check_precision(config_path, config, compiled.module)
    rename_legacy_io(config, compiled)
    recorded = config.get("ir_sha256")
    if isinstance(recorded, str):
        actual = hashlib.sha256(normalized_ir(compiled.module).encode("utf-8")).hexdigest()
        if actual != recorded:
            warnings.warn(f"{config_path}: this tdsl compiles the stored source to a different IR than the one "
                          "the package was saved with (a different tdsl version?); the weights fit it",
                          stacklevel=2)
    return LoadedPackage(folder, config, compiled, arrays)
