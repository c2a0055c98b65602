"""Atomic file and folder writes, where package code found them; they live in `tdsl.support.files`
(a backend writes files too, and backends import nothing of `package/`)."""
from tdsl.support.files import (
    aside_name,
    exchange,
    fsync_folder,
    plain_mode,
    recover_folder,
    replace_folder,
    sha256_file,
    sweep_folders,
    write_atomic,
    write_with,
)

__all__ = ["aside_name", "exchange", "fsync_folder", "plain_mode", "recover_folder", "replace_folder",
           "sha256_file", "sweep_folders", "write_atomic", "write_with"]
