"""Hub-ready packages: config.json's model_type/architectures/pipeline_tag, scores in config
and card (huggingface_hub reads them back), one output name in config and ONNX, old names load."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import tdsl


@pytest.fixture(scope="module")
def mlp_frozen() -> Any:
    import torch

    torch.manual_seed(0)
    return tdsl.quantize("mlp", precision="ternary")


def test_config_names_the_model_family_and_task(lenet_package: Path, tmp_path: Path, mlp_frozen: Any) -> None:
    config = json.loads((lenet_package / "config.json").read_text())
    assert config["model_type"] == "tdsl" and config["architectures"] == ["LeNet"]
    assert config["pipeline_tag"] == "image-classification"     # [N, 1, H, W] -> [N, 10]
    assert "evaluation" not in config                           # nothing was measured
    mlp = json.loads((tdsl.save(mlp_frozen, tmp_path / "mlp") / "config.json").read_text())
    assert mlp["pipeline_tag"] == "tabular-classification"      # [N, 64] -> [N, 10]


def test_scores_go_to_config_and_card_model_index(mlp_frozen: Any, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    path = tdsl.save(mlp_frozen, tmp_path / "p", dataset="digits", metrics={"accuracy": 0.93},
                     task="image-classification")
    config = json.loads((path / "config.json").read_text())
    assert config["evaluation"] == {"dataset": "digits", "split": "test", "metrics": {"accuracy": 0.93}}
    card = ModelCard.load(path / "README.md")
    assert card.data.pipeline_tag == "image-classification" and card.data.datasets == ["digits"]
    assert card.data.library_name == "tdsl" and "mlp" in card.data.tags
    (result,) = card.data.eval_results
    assert (result.task_type, result.dataset_name, result.dataset_split) == ("image-classification", "digits", "test")
    assert (result.metric_type, result.metric_value) == ("accuracy", 0.93)
    assert "- Accuracy on digits (test): 0.93" in card.text
    again = tdsl.save(tdsl.load(path), tmp_path / "again")     # a re-saved package keeps its scores
    assert json.loads((again / "config.json").read_text())["evaluation"] == config["evaluation"]
    with pytest.raises(tdsl.TdslError, match="metric 'accuracy' must be a number"):
        tdsl.save(mlp_frozen, tmp_path / "bad", metrics={"accuracy": "high"})


def test_output_is_named_alike_in_config_and_onnx(lenet_package: Path, tmp_path: Path) -> None:
    import onnx

    from tdsl.backends.onnx import export_onnx

    pkg = tdsl.load(lenet_package)
    export_onnx(pkg.to_frozen(), str(tmp_path / "m.onnx"))
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [o["name"] for o in pkg.config["outputs"]] == [o.name for o in graph.output] == ["output"]
    assert [i["name"] for i in pkg.config["inputs"]] == [i.name for i in graph.input] == ["x"]


def test_a_package_with_the_old_output_name_loads_with_the_new(lenet_package: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(lenet_package, old)
    config = json.loads((old / "config.json").read_text())
    config["outputs"][0]["name"] = "output0"   # what tdsl wrote before the names were unified
    for key in ("model_type", "architectures", "pipeline_tag"):
        config.pop(key)
    (old / "config.json").write_text(json.dumps(config))
    pkg = tdsl.load(old)
    assert pkg.config["outputs"][0]["name"] == "output"
