"""Write a frozen model as a tdsl package (layout in `tdsl.package`, schema in docs/PACKAGE.md).

The package must rebuild the same program from text, so `save` finds the DSL source (the
file the model was compiled from, or `source=`) and the pass pipeline (`pipeline=`, or the
one `tdsl.quantize` uses for the model's precision, or the pass names with default
options), compiles them again and checks that the frozen IR is the model's before writing
anything. Files are written into a temporary folder beside the target and swapped into
place (`files.replace_folder`), so a failure never leaves half a package and a replacing save
killed at any instant leaves the old package or the new one at the path, never neither.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from tdsl.errors import TdslError
from tdsl.package import CARD_FILE, CONFIG_FILE, PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION, WEIGHTS_FILE
from tdsl.package.checks import check_name, check_values
from tdsl.package.files import plain_mode, recover_folder, replace_folder, sha256_file, sweep_folders
from tdsl.package.layout import expected_tensors, io_spec
from tdsl.package.reader import aside_prefix, build_frozen_program, normalized_ir, staged_prefix

if TYPE_CHECKING:
    from torch import nn

    from tdsl.model.compiled import CompiledModel
    from tdsl.model.frozen import FrozenModel


def as_frozen(model: Any, module: nn.Module | None = None) -> FrozenModel:
    """A FrozenModel from a FrozenModel, or from a CompiledModel and its trained module."""
    from tdsl.model.compiled import CompiledModel
    from tdsl.model.frozen import FrozenModel

    if isinstance(model, FrozenModel):
        if module is not None:
            raise TdslError("save: pass module= only with a CompiledModel; a FrozenModel holds its weights")
        return model
    if isinstance(model, CompiledModel):
        if module is None:
            raise TdslError("save: a CompiledModel needs its weights: pass module= (the nn.Module from "
                            "compiled.to_torch(), trained or not)")
        return model.freeze(module)
    raise TdslError(f"save: expected a FrozenModel (tdsl.quantize, compiled.freeze) or a CompiledModel, "
                    f"got {type(model).__name__}")


def model_source(compiled: CompiledModel, source: str | None) -> tuple[str, str | None, str]:
    """(DSL text, zoo name or None, file name) of the program `compiled` came from."""
    from tdsl.models import ZOO, zoo_path

    path = Path(compiled.filename)
    zoo = next((n for n in ZOO if path.is_file() and path.resolve() == zoo_path(n).resolve()), None)
    if source is not None:
        return source, None, path.name if path.is_file() else "<input>"
    if not path.is_file():
        raise TdslError(f"save: the model was compiled from {compiled.filename}, not from a file; "
                        "pass source= (the DSL text) so the package can rebuild it")
    return path.read_text(encoding="utf-8"), zoo, path.name


def find_pipeline(frozen: FrozenModel, source: str, pipeline: str | None) -> str:
    """The pipeline that compiles `source` into `frozen`'s program, checked by compiling it.

    The compiled model records the pipeline it was given; `pipeline=` overrides it.
    """
    compiled = frozen.compiled
    spec = compiled.pipeline if pipeline is None else pipeline
    rebuilt = build_frozen_program(source, entry=compiled.entry, params=compiled.params, pipeline=spec,
                                   format=frozen.format)
    if normalized_ir(rebuilt.module) != normalized_ir(compiled.module):
        raise TdslError(f"save: compiling the source with pipeline '{spec}' does not give the model's program")
    return spec


def precision_policy(frozen: FrozenModel) -> dict[str, Any]:
    """The precision of every weight and the ternary quantiser, from the frozen layout."""
    weights = {s.weight: s.precision for s in frozen.layout.values() if s.role in ("packed", "weight")}
    quant = next((s.quant for s in frozen.layout.values() if s.role == "packed" and s.quant), None)
    precision = frozen.precision
    if not precision:
        used = set(weights.values())
        precision = used.pop() if len(used) == 1 else "custom"
    packed = any(s.role == "packed" for s in frozen.layout.values())
    return {"precision": precision, "packed": packed, "quantizer": quant, "weights": weights}


def memory_markdown(frozen: FrozenModel) -> str:
    """The memory report as a markdown table (by kind, total, fp32 baseline)."""
    from tdsl.model.reports import KINDS

    report = frozen.memory_report()
    kinds = report.by_kind()
    rows = ["| tensors | bytes |", "|---|---:|"]
    rows += [f"| {kind} | {kinds[kind]:,} |" for kind in KINDS if kinds[kind]]
    rows += [f"| **total** | **{report.total:,}** |", f"| fp32 model | {report.fp32_total:,} |",
             f"| ratio | {report.ratio:.2f}x smaller |"]
    return "\n".join(rows)


MODEL_TYPE = "tdsl"
"""config.json's `model_type`, as Hugging Face configs name their model family."""


def pipeline_tag(io: dict[str, list[dict[str, Any]]]) -> str | None:
    """The Hub task a program's inputs and outputs suggest: one float image batch [N, C, H, W]
    to class scores [N, K] is image classification, a float feature batch [N, F] to [N, K]
    tabular classification; anything else (token ids, several outputs) gets no tag rather
    than a wrong one (`save(task=...)` sets it)."""
    if len(io["inputs"]) != 1 or len(io["outputs"]) != 1:
        return None
    x, y = io["inputs"][0], io["outputs"][0]
    if not str(x["dtype"]).startswith("float") or not x["shape"] or not y["shape"] or len(y["shape"]) != 2:
        return None
    return {4: "image-classification", 2: "tabular-classification"}.get(len(x["shape"]))


def evaluation_entry(dataset: str | None, metrics: Mapping[str, float] | None,
                     split: str | None) -> dict[str, Any] | None:
    """config.json's `evaluation`: what was measured on which data (None when nothing was)."""
    if not metrics:
        return None
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise TdslError(f"save: metric '{key}' must be a number, got {value!r}")
    return {"dataset": dataset, "split": split, "metrics": {k: float(v) for k, v in metrics.items()}}


def _write_card(path: Path, name: str, config: dict[str, Any], frozen: FrozenModel) -> None:
    from tdsl.package.card import write_model_card

    model, policy = config["model"], config["precision"]
    origin = f"the tdsl zoo model `{model['zoo_name']}`" if model["zoo_name"] else f"`{model['source_file']}`"
    params = ", ".join(f"`{k}={v!r}`" for k, v in model["params"].items()) or "defaults"
    io = "; ".join(f"{t['name']}: {t['dtype']} [{', '.join('N' if d is None else str(d) for d in t['shape'])}]"
                   for t in config["inputs"])
    counts: dict[str, int] = {}
    for p in policy["weights"].values():
        counts[p] = counts.get(p, 0) + 1
    ternary = [w for w, p in policy["weights"].items() if p != "ternary"]
    fmt = f", packed format `{config['freeze']['format']}` (version {config['packed_format']['version']})" \
        if policy["packed"] else ""
    evaluation = config.get("evaluation") or {}
    scores = dict(evaluation.get("metrics") or {})
    accuracy = scores.pop("accuracy", None)
    origin_note = getattr(frozen, "weights_origin", None)
    untrained = (f"\n\n**The weights are {origin_note}: this package shows the format and the runtime, "
                 "its outputs mean nothing.**") if origin_note else ""
    write_model_card(
        path, name=name,
        description=f"`{model['entry']}` compiled by tdsl {config['tdsl_version']} and frozen at "
                    f"{policy['precision']} precision{fmt}.{untrained}",
        architecture=f"Layer `{model['entry']}` from {origin}, parameters {params}.\n\nInputs: {io}.\n\n"
                     f"Passes: `{config['pipeline'] or '(none)'}`.",
        precision_policy=f"{policy['precision']}: " + ", ".join(f"{n} {p}" for p, n in counts.items())
                         + " weights" + (f"; kept at higher precision: {', '.join(f'`{w}`' for w in ternary)}"
                                         if policy["packed"] and ternary else "")
                         + (f". Quantiser: `{json.dumps(policy['quantizer'])}`." if policy["quantizer"] else "."),
        memory_table_md=memory_markdown(frozen),
        how_to_load="import tdsl\n\npkg = tdsl.load(\"path/to/this/folder\")\nnet = pkg.to_torch()"
                    "            # torch nn.Module, eval mode\nrunner = pkg.deploy(\"numba\")   # torch-free",
        accuracy=accuracy, metrics=scores or None, dataset=evaluation.get("dataset"),
        split=evaluation.get("split"), task=config.get("pipeline_tag"),
        tags=("ternary", "quantized", *([model["zoo_name"]] if model["zoo_name"] else [])))


def _is_package(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("format") == PACKAGE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save(model: Any, path: str | os.PathLike[str], *, module: nn.Module | None = None, source: str | None = None,
         pipeline: str | None = None, name: str | None = None, overwrite: bool = False,
         dataset: str | None = None, metrics: Mapping[str, float] | None = None, split: str | None = "test",
         task: str | None = None) -> Path:
    """Write `model` as a package folder at `path` and return it.

    `model` is a `FrozenModel` (any precision), or a `CompiledModel` with `module=` (frozen
    here). `source` gives the DSL text when the model was not compiled from a file,
    `pipeline` the pass pipeline when it is not one `tdsl.quantize` uses; `overwrite`
    replaces an existing package (never a folder that is not one). `metrics` (e.g.
    `{"accuracy": 0.97}`, measured on `split` of `dataset`) go into config.json and the
    card's model-index; `task` is the Hub pipeline tag (default: `pipeline_tag` of the IO).
    """
    import numpy as np
    from safetensors.numpy import save_file

    from tdsl.support.version import __version__
    from tdsl.runtime.packing import PACK_FORMAT_VERSION

    dest = Path(path)
    for part in dest.parts:
        check_name(part, dest, "the package path")
    recover_folder(dest, aside_prefix(dest))
    sweep_folders(dest, aside_prefix(dest), staged_prefix(dest))
    if dest.exists() and not (overwrite and dest.is_dir() and not dest.is_symlink() and _is_package(dest)):
        raise TdslError(f"{dest}: already exists" + ("" if overwrite else "; pass overwrite=True to replace a package")
                        + (" and is not a tdsl package" if overwrite else ""))
    from tdsl.package.reader import LoadedPackage

    origin: tuple[str | None, str] | None = None
    if isinstance(model, LoadedPackage):  # saving a loaded package again: its own source, weights, scores
        stored = model.config["model"]
        if source is None:
            source, origin = stored["source"], (stored["zoo_name"], stored["source_file"])
        pipeline = model.config["pipeline"] if pipeline is None else pipeline
        kept = model.config.get("evaluation") or {}
        if metrics is None and kept.get("metrics"):
            dataset, metrics, split = kept.get("dataset"), kept["metrics"], kept.get("split")
        task = task or model.config.get("pipeline_tag")
        model = model.to_frozen()
    frozen = as_frozen(model, module)
    text, zoo, filename = model_source(frozen.compiled, source)
    if origin is not None:
        zoo, filename = origin
    spec = find_pipeline(frozen, text, pipeline)
    state = frozen.state_dict()
    expected = expected_tensors(frozen.compiled.module)
    actual = {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in state.items()}
    if actual != {k: (s.dtype, s.shape) for k, s in expected.items()}:
        differ = sorted(set(actual) ^ set(expected)) or sorted(k for k in actual if actual[k] != (
            expected[k].dtype, expected[k].shape))
        raise TdslError(f"save: the torch module's state dict does not match the program's declarations "
                        f"(first difference: {differ[0]}); the package could not be loaded back")
    # np.ascontiguousarray makes a 0-d array 1-d: a per-tensor scale () would load as (1,)
    arrays = {k: np.ascontiguousarray(v.detach().cpu().numpy()).reshape(tuple(v.shape)) for k, v in state.items()}
    check_values(Path("save"), arrays)
    compiled = frozen.compiled
    io = io_spec(compiled.module)
    config: dict[str, Any] = {
        "format": PACKAGE_FORMAT,
        "format_version": PACKAGE_FORMAT_VERSION,
        "tdsl_version": __version__,
        "model_type": MODEL_TYPE,
        "architectures": [compiled.entry],
        "pipeline_tag": task or pipeline_tag(io),
        "name": name or zoo or compiled.entry,
        "model": {"zoo_name": zoo, "source_file": filename, "entry": compiled.entry, "params": compiled.params,
                  "source": text},
        "pipeline": spec,
        "freeze": {"format": frozen.format},
        "precision": precision_policy(frozen),
        **io,
        "packed_format": {"name": frozen.format, "version": PACK_FORMAT_VERSION},
        "weights": {"file": WEIGHTS_FILE, "sha256": "", "bytes": 0},
        "ir_sha256": hashlib.sha256(normalized_ir(compiled.module).encode("utf-8")).hexdigest(),
    }
    evaluation = evaluation_entry(dataset, metrics, split)
    if evaluation is not None:
        config["evaluation"] = evaluation
    try:
        json.dumps(config["model"]["params"], allow_nan=False)
    except (TypeError, ValueError):
        raise TdslError(f"save: parameters {compiled.params!r} cannot be stored as JSON") from None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=staged_prefix(dest)))
    except OSError as e:  # a file where a folder must be, no permission
        raise TdslError(f"{dest}: cannot write a package here ({e.strerror}: {e.filename})") from None
    try:
        os.chmod(tmp, plain_mode(folder=True))
        save_file(arrays, str(tmp / WEIGHTS_FILE), metadata={"format": PACKAGE_FORMAT})
        os.chmod(tmp / WEIGHTS_FILE, plain_mode())  # safetensors writes 0600
        config["weights"].update(sha256=sha256_file(tmp / WEIGHTS_FILE), bytes=(tmp / WEIGHTS_FILE).stat().st_size)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        _write_card(tmp / CARD_FILE, config["name"], config, frozen)
        replace_folder(tmp, dest, aside_prefix(dest))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
