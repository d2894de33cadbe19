"""Training losses for every head, with transformers' semantics (float32, mean reduction).

Labels use -100 for positions to ignore (masked and causal LM, token classification), as
transformers' `CrossEntropyLoss(ignore_index=-100)`; a batch with nothing to score gives NaN, as
torch does. `loss_for(model)` picks the loss of a head; it takes `(outputs, batch)` where the batch
holds `labels` (or `start_positions` / `end_positions` for QA).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

IGNORE_INDEX = -100


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX):
    """Mean cross-entropy over positions whose label is not `ignore_index`.

    logits float [..., K], labels int [...] -> float32 [].
    """
    logits = logits.astype(jnp.float32)
    keep = labels != ignore_index
    safe = jnp.where(keep, labels, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    return jnp.sum(jnp.where(keep, losses, 0.0)) / jnp.sum(keep)


def masked_lm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """logits [B, T, V], labels [B, T] (-100 = not masked) -> []."""
    return cross_entropy(logits, labels)


def causal_lm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Next-token loss: logits at t predict labels at t + 1. logits [B, T, V], labels [B, T]."""
    return cross_entropy(logits[:, :-1], labels[:, 1:])


def sequence_classification_loss(
    logits: jax.Array, labels: jax.Array, problem_type: str | None = None
) -> jax.Array:
    """logits [B, K]; labels [B] int (single-label), [B] or [B, 1] float (regression, K = 1),
    [B, K] float (regression, multi-label). problem_type None is inferred as transformers does:
    K == 1 regression, integer labels single-label, else multi-label."""
    num_labels = logits.shape[-1]
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif jnp.issubdtype(labels.dtype, jnp.integer):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    logits = logits.astype(jnp.float32)
    if problem_type == "regression":
        if num_labels == 1:
            return jnp.mean((logits.squeeze() - labels.astype(jnp.float32).squeeze()) ** 2)
        return jnp.mean((logits - labels.astype(jnp.float32)) ** 2)
    if problem_type == "single_label_classification":
        return cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1))
    if problem_type == "multi_label_classification":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)))
    raise ValueError(f"unknown problem_type {problem_type!r}")


def token_classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """logits [B, T, K], labels [B, T] (-100 = ignore) -> []."""
    return cross_entropy(logits, labels)


def multiple_choice_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """logits [B, C], labels [B] (index of the right choice) -> []."""
    return cross_entropy(logits, labels)


def question_answering_loss(
    start_logits: jax.Array,
    end_logits: jax.Array,
    start_positions: jax.Array,
    end_positions: jax.Array,
) -> jax.Array:
    """Mean of start and end cross-entropies. logits [B, T], positions [B] (or [B, 1]).

    As transformers: positions are clamped to [0, T] and T (outside the input) is ignored.
    """
    length = start_logits.shape[1]

    def one(logits: jax.Array, positions: jax.Array) -> jax.Array:
        positions = jnp.clip(positions.reshape(positions.shape[0]), 0, length)
        return cross_entropy(logits, positions, ignore_index=length)

    return (one(start_logits, start_positions) + one(end_logits, end_positions)) / 2


def loss_for(model: Any) -> Callable[[Any, dict[str, jax.Array]], jax.Array]:
    """The loss of `model`'s head as `fn(outputs, batch) -> float32 []` (each head's
    `compute_loss`); the bare encoder has none and raises."""
    compute_loss = getattr(model, "compute_loss", None)
    if compute_loss is None:
        raise ValueError(f"{type(model).__name__} has no training loss; use a head model")
    return compute_loss
