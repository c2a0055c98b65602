"""The model card: front matter parses back, the Hub library accepts it, the body has each part."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tdsl.errors import TdslError
from tdsl.publish.card import write_model_card

TABLE = "| params | fp32 | packed |\n|---|---|---|\n| fc1 | 512 B | 32 B |"


def _write(path: Path, **kw: object) -> str:
    args: dict[str, object] = dict(name="lenet: ternary \"v1\"", description="A LeNet with ternary weights.",
                                   architecture="conv(6) -> conv(16) -> fc(120) -> fc(10)",
                                   precision_policy="ternary conv/fc, fp32 first and last layer",
                                   memory_table_md=TABLE, how_to_load="path = from_pretrained_path('me/lenet')")
    args.update(kw)
    write_model_card(path, **args)  # type: ignore[arg-type]
    return path.read_text()


def _front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


def test_front_matter_with_model_index(tmp_path: Path) -> None:
    text = _write(tmp_path / "README.md", accuracy=0.981, dataset="mnist", metrics={"top5_accuracy": 0.999},
                  tags=("ternary", "lenet"))
    meta = _front(text)
    assert meta["library_name"] == "tdsl" and meta["license"] == "apache-2.0"
    assert meta["tags"] == ["ternary", "quantized", "lenet"]
    assert meta["datasets"] == ["mnist"] and meta["metrics"] == ["accuracy", "top5_accuracy"]
    (entry,) = meta["model-index"]
    assert entry["name"] == 'lenet: ternary "v1"'
    (result,) = entry["results"]
    assert result["task"] == {"type": "image-classification"}
    assert result["dataset"] == {"name": "mnist", "type": "mnist"}
    assert result["metrics"][0] == {"type": "accuracy", "value": 0.981, "name": "Accuracy"}
    for part in ("## Architecture", "fc(120)", "## Precision policy", TABLE, "Accuracy on mnist: 0.981",
                 "## How to load", "```python\npath = from_pretrained_path('me/lenet')\n```"):
        assert part in text


def test_hub_library_reads_it(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard, metadata_load

    path = tmp_path / "README.md"
    _write(path, accuracy=0.9, dataset="cifar10")
    card = ModelCard.load(path)
    assert card.data.library_name == "tdsl" and "quantized" in card.data.tags
    (result,) = card.data.eval_results
    assert (result.dataset_type, result.metric_type, result.metric_value) == ("cifar10", "accuracy", 0.9)
    assert metadata_load(path)["license"] == "apache-2.0"


def test_no_scores_means_no_model_index(tmp_path: Path) -> None:
    meta = _front(_write(tmp_path / "README.md", dataset="mnist"))
    assert "model-index" not in meta and "metrics" not in meta and meta["datasets"] == ["mnist"]


def test_non_numeric_metric_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(TdslError, match="metric 'f1' must be a number"):
        _write(tmp_path / "README.md", metrics={"f1": "high"})
    assert not (tmp_path / "README.md").exists()
