"""The model card (`README.md`) of a package: YAML front matter the Hub reads, and a body people read.

The front matter is huggingface_hub's `ModelCardData` with one `EvalResult` per score, so
the Hub's own serialiser writes `library_name`, `license`, `tags`, `pipeline_tag`,
`datasets`, `metrics` and the `model-index` (a name or description with `:` or quotes
cannot break it, and the Hub parses back exactly what it wrote). The body is markdown.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Mapping, Sequence

from tdsl.errors import TdslError
from tdsl.support.files import write_atomic

if TYPE_CHECKING:
    from huggingface_hub import ModelCardData

BASE_TAGS = ("ternary", "quantized")


def card_data(*, name: str, accuracy: float | None = None, dataset: str | None = None,
              license: str = "apache-2.0", metrics: Mapping[str, float] | None = None,
              tags: Sequence[str] = (), task: str | None = "image-classification",
              split: str | None = None) -> ModelCardData:
    """The front matter. `task` is the Hub's pipeline tag; the model-index needs a task, a
    dataset and at least one score (`split` names the part of the dataset it was measured on)."""
    from huggingface_hub import EvalResult, ModelCardData

    scores: dict[str, float] = {}
    if accuracy is not None:
        scores["accuracy"] = accuracy
    for key, value in (metrics or {}).items():
        scores[key] = value
    for key, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TdslError(f"model card: metric '{key}' must be a number, got {value!r}")
    results = [EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset, dataset_split=split,
                          metric_type=k, metric_value=float(v), metric_name=k.replace("_", " ").capitalize())
               for k, v in scores.items()] if task and dataset else []
    return ModelCardData(library_name="tdsl", license=license, tags=list(dict.fromkeys([*BASE_TAGS, *tags])),
                         pipeline_tag=task, datasets=[dataset] if dataset else None,
                         metrics=list(scores) or None, model_name=name if results else None,
                         eval_results=results or None)


def render_model_card(*, name: str, description: str, architecture: str, precision_policy: str,
                      memory_table_md: str, how_to_load: str, accuracy: float | None = None,
                      dataset: str | None = None, license: str = "apache-2.0",
                      metrics: Mapping[str, float] | None = None, tags: Sequence[str] = (),
                      task: str | None = "image-classification", split: str | None = None) -> str:
    """The card's text: `---` front matter `---`, then the markdown body (a `ModelCard`)."""
    from huggingface_hub import ModelCard

    if not name.strip():
        raise TdslError("model card: the name is empty")
    data = card_data(name=name, accuracy=accuracy, dataset=dataset, license=license,
                     metrics=metrics, tags=tags, task=task, split=split)
    body = [f"# {name}", "", description.strip(), "",
            "## Architecture", "", architecture.strip(), "",
            "## Precision policy", "", precision_policy.strip(), "",
            "## Memory", "", memory_table_md.strip(), ""]
    if accuracy is not None or metrics:
        on = (f" on {dataset}" + (f" ({split})" if split else "")) if dataset else ""
        body += ["## Results", ""]
        if accuracy is not None:
            body.append(f"- Accuracy{on}: {accuracy:.4g}")
        body += [f"- {k}{on}: {v:.4g}" for k, v in (metrics or {}).items()] + [""]
    load = how_to_load.strip()
    body += ["## How to load", "", load if "```" in load else f"```python\n{load}\n```", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)))


def write_model_card(path: str | os.PathLike[str], *, name: str, description: str, architecture: str,
                     precision_policy: str, memory_table_md: str, accuracy: float | None = None,
                     dataset: str | None = None, license: str = "apache-2.0",
                     metrics: Mapping[str, float] | None = None, tags: Sequence[str] = BASE_TAGS,
                     how_to_load: str, task: str | None = "image-classification", split: str | None = None) -> None:
    """Write the card to `path` (a package's README.md) atomically; see `render_model_card`."""
    text = render_model_card(name=name, description=description, architecture=architecture,
                             precision_policy=precision_policy, memory_table_md=memory_table_md,
                             how_to_load=how_to_load, accuracy=accuracy, dataset=dataset, license=license,
                             metrics=metrics, tags=tags, task=task, split=split)
    try:
        write_atomic(os.fspath(path), text)
    except OSError as e:
        raise TdslError(f"{path}: cannot write the model card ({e.strerror})") from None
