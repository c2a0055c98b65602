"""Fetching a package into place: downloaded to a staging folder, loaded there (as
`tdsl.load` does: config, the weights' SHA-256, the tensors against the rebuilt program),
and only then moved to `output/NAME`; plus a few summary lines about a loaded package.

What `tdsl fetch hf|github` (tdsl.tools.fetch) runs over `hf.fetch_hf` / `github.fetch_github`.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tdsl.errors import TdslError

if TYPE_CHECKING:
    from tdsl.package.reader import LoadedPackage


def fetch_and_load(fetch: Callable[[Path], Path], output: str | Path, overwrite: bool = True) -> LoadedPackage:
    """Run `fetch(staging)` (which returns the package folder it made inside `staging`), load
    the package there, then move it to `output/NAME` and return it loaded, its `path` the
    final folder. A download or a package that fails to load leaves no new files behind (and
    a previous `output/NAME` untouched); so does an existing `output/NAME` when not `overwrite`
    (NAME is known only once the download is there)."""
    from tdsl.package import load
    from tdsl.publish.archive import fresh_dir_beside, replace_dir

    out = Path(output)
    made = [p for p in (out, *out.parents) if not p.exists()]  # folders this call creates
    try:
        staging = fresh_dir_beside(out / ".tdsl-fetch")
    except OSError as e:
        raise TdslError(f"{out}: cannot create the output folder ({e.strerror})") from None
    try:
        fetched = fetch(staging)
        try:
            pkg = load(fetched)
        except TdslError as e:
            message = e.message.replace(str(fetched), fetched.name)  # the staging folder is about to go
            raise TdslError(f"the fetched package {fetched.name} does not load, so it was not kept: {message}",
                            e.loc, e.notes) from None
        target = out / fetched.name
        if not overwrite and (target.exists() or target.is_symlink()):
            raise TdslError(f"-o {out}: {target} already exists; pass --force to replace it")
        replace_dir(fetched, target)
        pkg.path = target
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # innermost first: only the empty folders this call made
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return pkg


def package_summary(pkg: Any) -> list[str]:
    """A few lines about a loaded package: name, entry, precision, weights, inputs, extra files."""
    config = pkg.config
    weights = config.get("weights", {})
    model = config.get("model", {})
    params = ", ".join(f"{k}={v}" for k, v in model.get("params", {}).items())

    def io(spec: Any) -> str:
        shape = ", ".join("batch" if d is None else str(d) for d in spec.get("shape") or [])
        return f"{spec.get('name')}: {spec.get('dtype')}[{shape}]"

    known = ("config.json", "README.md", weights.get("file"))
    extras = sorted(p.name for p in pkg.path.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.name not in known)
    lines = [f"loaded {pkg.name}: entry {pkg.compiled.entry}" + (f"({params})" if params else ""),
             f"  precision {pkg.precision or 'unknown'}, packed format {pkg.format}",
             f"  weights {weights.get('file')}: {weights.get('bytes')} bytes, {len(pkg.arrays)} tensors",
             f"  inputs {'; '.join(io(s) for s in config.get('inputs', [])) or 'none recorded'}"]
    if extras:
        lines.append(f"  also {', '.join(extras)}")
    return lines
