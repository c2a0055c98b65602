"""The zoo registry: names, files, and the error for a name that is not in it."""
from __future__ import annotations

import pytest

from tdsl.errors import TdslError
from tdsl.models import ZOO, is_zoo_name, list_models, zoo_path


def test_list_models_is_sorted_and_complete() -> None:
    assert list_models() == ["bert_tiny", "bitnet", "lenet", "mlp", "mnist1d_cnn", "mnist1d_mlp",
                             "mobilenetv2", "resnet18"]
    assert set(list_models()) == set(ZOO)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_path_is_a_shipped_tdsl_file(name: str) -> None:
    path = zoo_path(name)
    assert path.is_file()
    assert path.suffix == ".tdsl"
    assert path.name == ZOO[name]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_file_cites_its_source_in_a_leading_comment(name: str) -> None:
    first_line = zoo_path(name).read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("#")


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "mlp", "lenet"])
def test_is_zoo_name_accepts_zoo_names(name: str) -> None:
    assert is_zoo_name(name)


@pytest.mark.parametrize("name", ["resnet19", "resnet18.tdsl", "models/mlp.tdsl",
                                  "layer L { }", "", "ResNet18"])
def test_is_zoo_name_rejects_everything_else(name: str) -> None:
    assert not is_zoo_name(name)


@pytest.mark.parametrize(("name", "suggested"), [
    ("resnet19", "resnet18"),
    ("ResNet18", "resnet18"),
    ("mobilenet_v2", "mobilenetv2"),
    ("lenet5", "lenet"),
])
def test_unknown_name_suggests_the_closest_model(name: str, suggested: str) -> None:
    with pytest.raises(TdslError) as info:
        zoo_path(name)
    message = str(info.value)
    assert f"unknown zoo model '{name}'" in message
    assert f"did you mean '{suggested}'?" in message


def test_unknown_name_lists_the_available_models() -> None:
    with pytest.raises(TdslError) as info:
        zoo_path("vgg16")
    message = str(info.value)
    assert "did you mean" not in message
    for name in ZOO:
        assert name in message
