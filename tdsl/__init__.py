"""tdsl: a compiler and toolkit for ternary neural networks.

The public API is small: `parse` a program, `compile` it (source text, a path, or the
name of a shipped zoo model) into a `CompiledModel`, and catch `TdslError` for anything
the user got wrong. torch is imported lazily, only by the torch backend.
"""
import tdsl.deploy as _deploy_module  # noqa: F401 - loaded first, so that the function below, not the submodule, is tdsl.deploy
from tdsl.errors import TdslError

from tdsl.support.version import __version__

__all__ = ["TdslError", "parse", "compile", "quantize", "qat", "deploy", "save", "load", "from_pretrained", "import_torch",
           "__version__"]


def parse(source_or_path: str, filename: str | None = None):
    """Parse DSL text or a `.tdsl`/`.tri` file into an AST `Program`."""
    from tdsl.frontend.parser import parse_program_or_file

    return parse_program_or_file(source_or_path, filename)


def compile(source_or_path: str, *, entry: str | None = None, params: dict | None = None,
            pipeline: str | None = None):
    """Compile a program (text, path, or zoo model name) through the pass pipeline."""
    from tdsl.api import compile as _compile

    return _compile(source_or_path, entry=entry, params=params, pipeline=pipeline)


def quantize(model, **kwargs):
    """Post-training quantisation to a `FrozenModel` (see `tdsl.precision.quantize`)."""
    from tdsl.precision import quantize as _quantize

    return _quantize(model, **kwargs)


def qat(model, precision: str = "ternary", **kwargs):
    """(CompiledModel, nn.Module) for quantisation-aware training (see `tdsl.precision.qat`)."""
    from tdsl.precision import qat as _qat

    return _qat(model, precision, **kwargs)


def deploy(model, backend: str = "numba", *, device: str = "cpu", act_quant: str = "int8", path=None,
           profile: bool = False, calibrate=None):
    """A frozen model, a loaded package or a compiled program with weights on a deployment
    backend: numpy in, numpy out, no torch (see `tdsl.deploy.deploy`)."""
    return _deploy_module.deploy(model, backend, device=device, act_quant=act_quant, path=path, profile=profile,
                                 calibrate=calibrate)


def save(model, path, **kwargs):
    """Write a frozen model as a package folder (see `tdsl.package.writer.save`)."""
    from tdsl.package import save as _save

    return _save(model, path, **kwargs)


def load(path):
    """Load a package folder without torch (see `tdsl.package.reader.load`)."""
    from tdsl.package import load as _load

    return _load(path)


def from_pretrained(repo_id_or_path, revision=None, *, token=None, endpoint=None, cache_dir=None, policy=None):
    """Download (cached) and load a package from the Hub, or load a local folder, without torch
    (see `tdsl.publish.pretrained.from_pretrained`)."""
    from tdsl.publish.pretrained import from_pretrained as _from_pretrained

    return _from_pretrained(repo_id_or_path, revision, token=token, endpoint=endpoint, cache_dir=cache_dir,
                            policy=policy)


def import_torch(model, example_inputs, output=None, *, overwrite: bool = False, name=None):
    """A PyTorch model (an `nn.Module` or a `torch.export` program) as an fp32 package with a
    readable tdsl program, written at `output` and beside it as `<output>.tdsl` (see
    `tdsl.importers.torch_export.import_torch`)."""
    from tdsl.importers.torch_export import import_torch as _import_torch

    return _import_torch(model, example_inputs, output, overwrite=overwrite, name=name)
