"""`tdsl.from_pretrained`: a Hub repo id (downloaded into the cache) or a local folder, loaded.

Built on `hf.from_pretrained_path` (download into plain files with `snapshot_download(local_dir=...)`,
cache, retries, token scrubbing) and `tdsl.package.load` (file names, config, the weights'
SHA-256, tensors against the program). Neither imports torch: `from_pretrained(...)` and
`.deploy("numba")` run without it, and `.to_torch()` imports it when asked.
"""
from __future__ import annotations

import os
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
        return load(path)
    except TdslError as e:
        raise TdslError(f"{where}: the downloaded package does not load: {e.message}", e.loc, e.notes) from None
