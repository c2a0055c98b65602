"""The model card (`README.md`) of a package: YAML front matter the Hub reads, and a body people read.

The front matter is built as data and written with `yaml.safe_dump`, never by pasting
strings, so a name or description with `:` or quotes cannot break it. It follows the Hub's
model card metadata: `library_name`, `license`, `tags`, `datasets`, `metrics`, and a
`model-index` (`name`, `results: [{task: {type}, dataset: {name, type}, metrics: [{type,
value, name}]}]`) when there is a score on a named dataset to report.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import yaml

from tdsl.errors import TdslError
from tdsl.package.files import write_atomic

BASE_TAGS = ("ternary", "quantized")


def card_metadata(*, name: str, accuracy: float | None = None, dataset: str | None = None,
                  license: str = "apache-2.0", metrics: Mapping[str, float] | None = None,
                  tags: Sequence[str] = (), task: str = "image-classification") -> dict[str, Any]:
    """The front matter as a dict. The model-index needs a dataset and at least one score."""
    scores: dict[str, float] = {}
    if accuracy is not None:
        scores["accuracy"] = accuracy
    for key, value in (metrics or {}).items():
        scores[key] = value
    for key, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TdslError(f"model card: metric '{key}' must be a number, got {value!r}")
    meta: dict[str, Any] = {
        "library_name": "tdsl",
        "license": license,
        "tags": list(dict.fromkeys([*BASE_TAGS, *tags])),
    }
    if dataset:
        meta["datasets"] = [dataset]
    if scores:
        meta["metrics"] = list(scores)
    if dataset and scores:
        meta["model-index"] = [{
            "name": name,
            "results": [{
                "task": {"type": task},
                "dataset": {"name": dataset, "type": dataset},
                "metrics": [{"type": k, "value": float(v), "name": k.replace("_", " ").capitalize()}
                            for k, v in scores.items()],
            }],
        }]
    return meta


def render_model_card(*, name: str, description: str, architecture: str, precision_policy: str,
                      memory_table_md: str, how_to_load: str, accuracy: float | None = None,
                      dataset: str | None = None, license: str = "apache-2.0",
                      metrics: Mapping[str, float] | None = None, tags: Sequence[str] = (),
                      task: str = "image-classification") -> str:
    """The card's text: `---` front matter `---`, then the markdown body."""
    if not name.strip():
        raise TdslError("model card: the name is empty")
    meta = card_metadata(name=name, accuracy=accuracy, dataset=dataset, license=license,
                         metrics=metrics, tags=tags, task=task)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    body = [f"# {name}", "", description.strip(), "",
            "## Architecture", "", architecture.strip(), "",
            "## Precision policy", "", precision_policy.strip(), "",
            "## Memory", "", memory_table_md.strip(), ""]
    if accuracy is not None or metrics:
        on = f" on {dataset}" if dataset else ""
        body += ["## Results", ""]
        if accuracy is not None:
            body.append(f"- Accuracy{on}: {accuracy:.4g}")
        body += [f"- {k}{on}: {v:.4g}" for k, v in (metrics or {}).items()] + [""]
    load = how_to_load.strip()
    body += ["## How to load", "", load if "```" in load else f"```python\n{load}\n```", ""]
    return f"---\n{front}---\n\n" + "\n".join(body)


def write_model_card(path: str | os.PathLike[str], *, name: str, description: str, architecture: str,
                     precision_policy: str, memory_table_md: str, accuracy: float | None = None,
                     dataset: str | None = None, license: str = "apache-2.0",
                     metrics: Mapping[str, float] | None = None, tags: Sequence[str] = BASE_TAGS,
                     how_to_load: str, task: str = "image-classification") -> None:
    """Write the card to `path` (a package's README.md) atomically; see `render_model_card`."""
    text = render_model_card(name=name, description=description, architecture=architecture,
                             precision_policy=precision_policy, memory_table_md=memory_table_md,
                             how_to_load=how_to_load, accuracy=accuracy, dataset=dataset, license=license,
                             metrics=metrics, tags=tags, task=task)
    try:
        write_atomic(os.fspath(path), text)
    except OSError as e:
        raise TdslError(f"{path}: cannot write the model card ({e.strerror})") from None
