"""`tdsl.from_pretrained`: a Hub repo id (downloaded into the cache) or a local folder, loaded.

Built on `hf.from_pretrained_path` (download, cache, retries, token scrubbing) and
`tdsl.package.load` (file names, config, the weights' SHA-256, tensors against the program).
A Hub download is the library's cache snapshot (symbolic links to blobs), which `load_snapshot`
loads through a folder of plain hard links. Neither imports torch: `from_pretrained(...)` and
`.deploy("numba")` run without it, and `.to_torch()` imports it when asked.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tdsl.errors import TdslError

if TYPE_CHECKING:
    from tdsl.package.reader import LoadedPackage
    from tdsl.publish.retry import NetPolicy


def from_pretrained(repo_id_or_path: str | os.PathLike[str], revision: str | None = None, *,
                    token: str | None = None, endpoint: str | None = None,
                    cache_dir: str | os.PathLike[str] | None = None,
                    policy: NetPolicy | None = None) -> LoadedPackage:
    """Download (cached) and load a model package: a Hub repo id `OWNER/NAME` at `revision`
    (branch, tag or commit; default main), or the path of a local package folder.

    A download that is not a package, or a package that does not load (for example weights
    whose SHA-256 differs from the one config.json records), is a `TdslError` naming the repo.
    """
    from tdsl.package import load
    from tdsl.publish.hf import from_pretrained_path

    path = from_pretrained_path(repo_id_or_path, revision=revision, token=token, endpoint=endpoint,
                                cache_dir=cache_dir, policy=policy)
    if os.path.isdir(repo_id_or_path):
        return load(path)  # a local folder: its own paths say where the problem is
    where = str(repo_id_or_path) + (f"@{revision}" if revision else "")
    try:
        return load_snapshot(path)
    except TdslError as e:
        raise TdslError(f"{where}: the downloaded package does not load: {e.message}", e.loc, e.notes) from None


def load_snapshot(snapshot: Path) -> LoadedPackage:
    """Load a `huggingface_hub` cache snapshot, whose files are symbolic links to `../../blobs/`.

    `tdsl.load` refuses symbolic links in a package, so the snapshot's files are hard-linked (or
    copied) into a temporary folder of plain files and loaded from there; every link must resolve
    into the repo's own cache folder. The loaded package holds everything in memory, so the
    temporary folder goes at once and `.path` is the snapshot (where model.onnx, the card, ... are).
    """
    from tdsl.package import load

    repo_cache = Path(os.path.realpath(snapshot.parent.parent))
    try:
        work = Path(tempfile.mkdtemp(prefix=".tdsl-load.", dir=repo_cache))
    except OSError:  # a read-only shared cache
        work = Path(tempfile.mkdtemp(prefix="tdsl-load."))
    try:
        for entry in sorted(snapshot.iterdir()):
            real = Path(os.path.realpath(entry))
            if not real.is_file():
                continue
            if repo_cache not in real.parents:
                raise TdslError(f"{entry}: resolves outside the repository's cache folder {repo_cache}")
            try:
                os.link(real, work / entry.name)
            except OSError:
                shutil.copyfile(real, work / entry.name)
        try:
            pkg = load(work)
        except TdslError as e:
            raise TdslError(e.message.replace(str(work), str(snapshot)), e.loc, e.notes) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pkg.path = snapshot
    return pkg
