"""Zero-shot cross-lingual transfer: fine-tune a classifier in one language, score it in many.

X-MOD's recipe (Pfeiffer et al., 2022): fine-tune on the source language with the embeddings and
every language adapter frozen (`freeze_labels(params, "xmod_paper")`), so the task is learned by
the shared trunk while each adapter stays as pre-training left it; then route each target row
through its own language's adapter. The paper's ablation routes every row through the source
language's adapter instead (`ClassificationSet.routed_to`).

  ClassificationSet    input_ids / attention_mask int32 [N, T], labels int32 [N], lang_ids int32 [N]
  finetune_classifier  the recipe's training loop; keeps the parameters best on a validation set
  make_predict         `predict(params, data)` -> int32 [N], mixed-language batches of one shape
  scores_by_language   {lang id: {"n", "accuracy", "macro_f1"}}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xmod_jax.train.freezing import freeze_labels
from xmod_jax.train.optim import make_optimizer
from xmod_jax.train.steps import TrainState, batch_indices, make_eval_step, make_train_step

FIELDS = ("input_ids", "attention_mask", "labels", "lang_ids")


@dataclass(frozen=True)
class ClassificationSet:
    """Labelled rows, each with the language whose adapter it goes through.

    input_ids, attention_mask: int32 [N, T]; labels: int32 [N]; lang_ids: int32 [N].
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    lang_ids: np.ndarray

    def __post_init__(self) -> None:
        for name in FIELDS:
            object.__setattr__(self, name, np.asarray(getattr(self, name), np.int32))
        n, t = self.input_ids.shape
        if self.attention_mask.shape != (n, t):
            raise ValueError(
                f"attention_mask has shape {self.attention_mask.shape}, input_ids {(n, t)}"
            )
        for name in ("labels", "lang_ids"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> ClassificationSet:
        """The rows at `index` (int [K])."""
        return ClassificationSet(*(getattr(self, name)[index] for name in FIELDS))

    def routed_to(self, lang_id: int) -> ClassificationSet:
        """The same rows, all through adapter `lang_id` (the paper's source-adapter ablation)."""
        return ClassificationSet(
            self.input_ids, self.attention_mask, self.labels, np.full(len(self), lang_id)
        )

    def batch(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The model's call arguments plus `labels` for the rows at `index`."""
        return {name: getattr(self, name)[index] for name in FIELDS}

    @classmethod
    def concatenate(cls, sets: Sequence[ClassificationSet]) -> ClassificationSet:
        """One set of all rows, in order (e.g. every language's test set, for mixed batches)."""
        if not sets:
            raise ValueError("no sets to concatenate")
        return cls(*(np.concatenate([getattr(s, name) for s in sets]) for name in FIELDS))


@dataclass
class FinetuneResult:
    """params: the kept parameters (best validation accuracy, or the last without `valid`);
    losses: the training loss of every step; valid_accuracy: {step: accuracy}."""

    params: Any
    losses: list[float] = field(default_factory=list)
    valid_accuracy: dict[int, float] = field(default_factory=dict)
    best_step: int | None = None


def finetune_classifier(
    model: Any,
    params: Any,
    train: ClassificationSet,
    *,
    valid: ClassificationSet | None = None,
    steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    warmup_fraction: float = 0.1,
    eval_every: int = 50,
    freeze: Any = "xmod_paper",
    seed: int = 0,
    callback: Callable[[int, float], None] | None = None,
) -> FinetuneResult:
    """Fine-tune a `XmodForSequenceClassification` on `train` (AdamW, warmup + linear decay,
    clipping at 1.0; `freeze` as in `freeze_labels`, None trains everything). Every `eval_every`
    steps and at the end, scores `valid` and keeps the best parameters (a host copy). `seed`
    orders the batches and seeds dropout. `callback(step, loss)` runs after every step."""
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be >= 1, got {steps} and {eval_every}")
    config = model.config
    tx = make_optimizer(
        params,
        learning_rate=learning_rate,
        freeze=freeze,
        config=config,
        warmup_steps=int(steps * warmup_fraction),
        total_steps=steps,
        clip_norm=1.0,
    )
    state = TrainState.create(jax.tree.map(jnp.copy, params), tx, seed=seed)  # steps donate
    train_step = make_train_step(model, tx, freeze_labels(params, freeze, config))
    predict = make_predict(model)
    result = FinetuneResult(params=None)
    best = -1.0
    for step in range(steps):
        index = batch_indices(seed, step, len(train), batch_size)
        state, metrics = train_step(state, train.batch(index))
        result.losses.append(float(metrics["loss"]))
        if callback is not None:
            callback(step, result.losses[-1])
        done = step + 1
        if valid is not None and (done % eval_every == 0 or done == steps):
            accuracy = float(np.mean(predict(state.params, valid) == valid.labels))
            result.valid_accuracy[done] = accuracy
            if accuracy > best:
                best, result.best_step = accuracy, done
                result.params = jax.device_get(state.params)
    if valid is None:
        result.params, result.best_step = jax.device_get(state.params), steps
    return result


def make_predict(
    model: Any, batch_size: int = 64
) -> Callable[[Any, ClassificationSet], np.ndarray]:
    """`predict(params, data)`: the argmax class of every row, int32 [N], rows in their order and
    languages mixed within a batch; the last batch is padded with copies of row 0, so one
    compilation serves every call of the same row length."""
    eval_step = make_eval_step(model)

    def predict(params: Any, data: ClassificationSet) -> np.ndarray:
        out = np.empty(len(data), np.int32)
        for start in range(0, len(data), batch_size):
            index = np.arange(start, min(start + batch_size, len(data)))
            padded = np.concatenate([index, np.zeros(batch_size - len(index), index.dtype)])
            predictions = eval_step(params, data.batch(padded))["predictions"]
            out[index] = np.asarray(predictions)[: len(index)]
        return out

    return predict


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes in `gold` or `pred` (F1 0 for a class without a true positive)."""
    scores = []
    for c in np.union1d(gold, pred):
        tp = np.sum((gold == c) & (pred == c))
        wrong = np.sum((gold == c) != (pred == c))  # false positives + false negatives
        scores.append(2 * tp / (2 * tp + wrong))
    return float(np.mean(scores)) if scores else 0.0


def scores_by_language(
    gold: np.ndarray, pred: np.ndarray, lang_ids: np.ndarray
) -> dict[int, dict[str, float]]:
    """{lang id: {"n", "accuracy", "macro_f1"}} over the rows of each language (int [N] each)."""
    gold, pred, lang_ids = map(np.asarray, (gold, pred, lang_ids))
    out = {}
    for lang in np.unique(lang_ids):
        rows = lang_ids == lang
        out[int(lang)] = {
            "n": int(rows.sum()),
            "accuracy": float(np.mean(gold[rows] == pred[rows])),
            "macro_f1": macro_f1(gold[rows], pred[rows]),
        }
    return out
