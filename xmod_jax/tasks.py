"""Classification task folders, read and encoded for a model.

A task folder has corpus/section_task.py's layout: `train.jsonl`, `valid.jsonl` and one
`test.<code>.jsonl` per language, records {"text", "label", "label_id", "lang", ...}, and
`labels.json` (the class names in id order). `BUNDLED_TASK` names the small one shipped in the
package (`xmod_jax/data/sections-mini`, cut by corpus/task_sample.py): Debian package
descriptions labelled with their archive section, English train and valid, five test languages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from xmod_jax.config import XmodConfig
from xmod_jax.text.tokenizer import XmodTokenizer
from xmod_jax.train.transfer import ClassificationSet

BUNDLED_TASK = "xmod-jax/sections-mini"
BUNDLED_TASK_FOLDER = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data", "sections-mini"
)


@dataclass
class ClassificationTask:
    """classes: names in id order; train / valid: sets; tests: {code: set}; skipped: the test
    languages the model has no adapter for."""

    classes: list[str]
    train: ClassificationSet
    valid: ClassificationSet
    tests: dict[str, ClassificationSet]
    skipped: list[str]


def read_records(path: str | os.PathLike) -> list[dict]:
    """One dict per line of a `.jsonl` file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def encode_records(
    records: list[dict],
    tokenizer: XmodTokenizer,
    config: XmodConfig,
    max_length: int,
    adapters: Mapping[str, str] | None = None,
) -> ClassificationSet:
    """Records -> rows padded (and cut) to `max_length` tokens, each routed to its record's
    language, or to `adapters[language]` where given (an unknown code raises, naming it)."""
    enc = tokenizer([r["text"] for r in records], padding="max_length", max_length=max_length)
    routes = adapters or {}
    return ClassificationSet(
        enc["input_ids"],
        enc["attention_mask"],
        np.array([r["label_id"] for r in records]),
        config.lang_ids([routes.get(r["lang"], r["lang"]) for r in records]),
    )


def load_classification_task(
    folder: str | os.PathLike,
    tokenizer: XmodTokenizer,
    config: XmodConfig,
    max_length: int = 64,
    adapters: Mapping[str, str] | None = None,
) -> ClassificationTask:
    """A task folder (or `BUNDLED_TASK`) encoded for a model; test languages without an adapter
    in `config` are skipped and listed in `skipped`. `adapters` sends a language's rows through
    another adapter ({"de_DE": "xx_XX"}: e.g. a shared model's one adapter); unknown adapter
    names raise before anything is encoded."""
    routes = dict(adapters or {})
    unknown = sorted(set(routes.values()) - set(config.languages))
    if unknown:
        raise ValueError(f"adapters {unknown} are not in the model's languages {config.languages}")
    folder = BUNDLED_TASK_FOLDER if os.fspath(folder) == BUNDLED_TASK else os.fspath(folder)
    if not os.path.isfile(os.path.join(folder, "labels.json")):
        raise FileNotFoundError(f"{folder!r} is not a task folder: it has no labels.json")
    with open(os.path.join(folder, "labels.json"), encoding="utf-8") as f:
        classes = json.load(f)

    def encode(name: str) -> ClassificationSet:
        return encode_records(
            read_records(os.path.join(folder, name)), tokenizer, config, max_length, routes
        )

    tests, skipped = {}, []
    for name in sorted(os.listdir(folder)):
        if name.startswith("test.") and name.endswith(".jsonl"):
            code = name[len("test.") : -len(".jsonl")]
            if routes.get(code, code) in config.languages:
                tests[code] = encode(name)
            else:
                skipped.append(code)
    return ClassificationTask(classes, encode("train.jsonl"), encode("valid.jsonl"), tests, skipped)
