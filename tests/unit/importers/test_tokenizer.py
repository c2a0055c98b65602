"""The package tokenizer: tokenizer.json through the `tokenizers` library (its post-processor's
special tokens kept, BOS added when tokenizer_config asks and the post-processor did not),
byte-level ids for zoo packages, and a clear error for a file the library cannot read."""
from __future__ import annotations

from pathlib import Path

import pytest

from tdsl.errors import TdslError
from tdsl.importers.tokenizer import Tokenizer


def _write(path: Path, bos_by_post_processor: bool) -> Path:
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import models, pre_tokenizers, processors

    tok = HfTokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "a": 2, "b": 3, "[UNK]": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "</s>"])
    if bos_by_post_processor:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(str(path))
    return path


@pytest.mark.parametrize("post_processor, add_bos, expected", [(True, False, [0, 2, 3]), (True, True, [0, 2, 3]),
                                                               (False, True, [0, 2, 3]), (False, False, [2, 3])])
def test_bos_comes_once_from_the_post_processor_or_the_config(tmp_path: Path, post_processor: bool, add_bos: bool,
                                                              expected: list[int]) -> None:
    tok = Tokenizer.from_file(_write(tmp_path / "t.json", post_processor), bos_token_id=0, add_bos=add_bos)
    assert tok.encode("a b") == expected
    assert tok.decode([0, 2, 3, 1]) == "a b"


def test_a_zoo_package_gets_bytes_and_a_bad_file_an_error(tmp_path: Path) -> None:
    tok = Tokenizer.for_package(tmp_path, {})
    assert tok.encode("hé") == [104, 195, 169] and tok.decode([104, 195, 169]) == "hé" and tok.vocab_size == 256
    (tmp_path / "tokenizer.json").write_text("{\"model\": 3}")
    with pytest.raises(TdslError, match="not a tokenizer the `tokenizers` library reads"):
        Tokenizer.for_package(tmp_path, {"tokenizer": {"file": "tokenizer.json"}})
    with pytest.raises(TdslError, match="not a plain file name"):
        Tokenizer.for_package(tmp_path, {"tokenizer": {"file": "../x.json"}})
