"""Text <-> token ids for a package: the checkpoint's own tokenizer.json, or bytes for the zoo.

An imported Hugging Face model was trained on its tokenizer (BPE for BitNet b1.58 2B4T, a
Llama-3 vocabulary), so its package carries tokenizer.json, which the `tokenizers` library
reads (no transformers, no torch). A package without one is a zoo decoder trained on UTF-8
bytes (as `tdsl.train.lm.encode_bytes`). `config.json`'s `tokenizer` field names the file and
the special ids (`bos_token_id`, `eos_token_id`) that `tdsl generate` uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdsl.errors import TdslError

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class Tokenizer:
    """Encode and decode with a tokenizer.json (`tokenizers`) or, when `backend` is None, bytes."""

    backend: Any = None
    """A `tokenizers.Tokenizer`, or None for byte-level ids."""
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    add_bos: bool = False
    """Put `bos_token_id` before a prompt when the tokenizer.json's post-processor did not
    (tokenizer_config.json's `add_bos_token`, as transformers reads it)."""

    @classmethod
    def from_file(cls, path: str | Path, *, bos_token_id: int | None = None,
                  eos_token_ids: tuple[int, ...] = (), add_bos: bool = False) -> Tokenizer:
        """Read a tokenizer.json; a file `tokenizers` cannot read is a TdslError naming it."""
        from tokenizers import Tokenizer as HfTokenizer

        try:
            backend = HfTokenizer.from_file(str(path))
        except Exception as e:  # the library raises a bare Exception for every kind of bad file
            raise TdslError(f"{path}: not a tokenizer the `tokenizers` library reads ({e})") from None
        return cls(backend, bos_token_id, tuple(eos_token_ids), add_bos)

    @classmethod
    def for_package(cls, folder: str | Path, config: dict[str, Any]) -> Tokenizer:
        """The tokenizer a package's config.json names, else byte-level ids."""
        entry = config.get("tokenizer")
        if entry is None:
            return cls()
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise TdslError(f"{Path(folder) / 'config.json'}: field 'tokenizer' must be an object with a 'file'")
        from tdsl.package.reader import member_path

        path = member_path(Path(folder), entry["file"], "the tokenizer")
        bos = entry.get("bos_token_id")
        eos = entry.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        if not (bos is None or isinstance(bos, int)) or not all(isinstance(i, int) for i in eos_ids):
            raise TdslError(f"{Path(folder) / 'config.json'}: the tokenizer's bos/eos token ids must be integers")
        return cls.from_file(path, bos_token_id=bos, eos_token_ids=eos_ids, add_bos=bool(entry.get("add_bos")))

    @property
    def vocab_size(self) -> int:
        return 256 if self.backend is None else int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """The ids of `text` (with the BOS id first when the checkpoint asks for one)."""
        if self.backend is None:  # tdsl.train.lm.encode_bytes, which imports torch with its module
            return list(text.encode("utf-8"))
        ids = list(self.backend.encode(text).ids)  # the tokenizer.json's post-processor adds what it adds (Llama 3: BOS)
        if self.add_bos and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: list[int]) -> str:
        """The text of generated ids (special tokens dropped)."""
        if self.backend is None:  # as tdsl.train.lm.decode_bytes: a cut character becomes U+FFFD
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        return str(self.backend.decode(list(ids), skip_special_tokens=True))
