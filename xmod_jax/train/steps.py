"""Pure training and evaluation steps over a `TrainState`.

`make_train_step(model, tx, labels)` returns `train_step(state, batch) -> (state, metrics)`,
jitted with the state donated. Gradients are taken with respect to the trainable partition only
(frozen leaves enter the loss as constants), so frozen tables cost no backward work and carry no
optimizer state. Dropout is on in training, with a key derived from (state.rng, state.step), and
off in `eval_step`. For bf16 compute with float32 master weights, build the model with
`dtype=jnp.bfloat16` and keep `param_dtype=float32`: gradients and updates stay float32.

A batch is a dict of the model's call arguments (`input_ids`, `lang_ids`, `attention_mask`, ...)
plus the targets the head's loss reads (`labels`, or `start_positions` / `end_positions`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xmod_jax.nn.losses import IGNORE_INDEX, loss_for
from xmod_jax.train.freezing import TRAINABLE

TARGET_KEYS = ("labels", "start_positions", "end_positions")
PREPARE_STREAM = 1  # `prepare_batch` draws from fold_in(step key, 1); dropout from the step key
Batch = dict[str, Any]


@flax.struct.dataclass
class TrainState:
    """params (plain dict), opt_state, step (int32 []), rng (uint32 [2] key data)."""

    params: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, seed: int = 0) -> TrainState:
        return cls(
            params=params,
            opt_state=tx.init(params),
            step=jnp.zeros((), jnp.int32),
            rng=jax.random.key_data(jax.random.key(seed)),
        )


def partition(params: Any, labels: Any) -> tuple[Any, Any]:
    """(trainable, frozen): two trees like `params`, each with `optax.MaskedNode` holes."""

    def pick(want: bool):
        return jax.tree.map(
            lambda p, label: p if (label == TRAINABLE) == want else optax.MaskedNode(),
            params,
            labels,
        )

    return pick(True), pick(False)


def merge(trainable: Any, frozen: Any) -> Any:
    """Inverse of `partition`."""
    is_hole = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    return jax.tree.map(lambda a, b: b if is_hole(a) else a, trainable, frozen, is_leaf=is_hole)


def _model_inputs(batch: Batch) -> Batch:
    return {k: v for k, v in batch.items() if k not in TARGET_KEYS}


def make_train_step(
    model: Any,
    tx: optax.GradientTransformation,
    labels: Any,
    loss_fn: Callable[[Any, Batch], jax.Array] | None = None,
    prepare_batch: Callable[[Batch, jax.Array], Batch] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted `train_step(state, batch) -> (state, {"loss", "grad_norm"})` (state donated).

    labels: the freezing label tree the optimizer was built with (`freeze_labels`).
    loss_fn: `(outputs, batch) -> loss`; defaults to the head's transformers loss.
    prepare_batch: `(batch, key) -> batch`, run inside the step with a key of its own per step
    (e.g. dynamic MLM masking, `xmod_jax.train.pretraining`).
    """
    loss_fn = loss_fn or loss_for(model)

    def compute_loss(trainable: Any, frozen: Any, batch: Batch, rng: jax.Array) -> jax.Array:
        params = merge(trainable, frozen)
        outputs = model.apply(
            {"params": params}, **_model_inputs(batch), deterministic=False, rngs={"dropout": rng}
        )
        return loss_fn(outputs, batch)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        trainable, frozen = partition(state.params, labels)
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        if prepare_batch is not None:
            batch = prepare_batch(batch, jax.random.fold_in(rng, PREPARE_STREAM))
        loss, grads = jax.value_and_grad(compute_loss)(trainable, frozen, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, trainable)
        params = merge(optax.apply_updates(trainable, updates), frozen)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics

    return jax.jit(train_step, donate_argnums=0)


def make_eval_step(
    model: Any, loss_fn: Callable[[Any, Batch], jax.Array] | None = None
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """A jitted `eval_step(params, batch) -> {"loss", ...outputs}` with dropout off.

    Classification heads also report `predictions` (argmax) and `accuracy`.
    """
    loss_fn = loss_fn or loss_for(model)

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        outputs = model.apply({"params": params}, **_model_inputs(batch))
        metrics = {"loss": loss_fn(outputs, batch)}
        logits = getattr(outputs, "logits", None)
        if logits is not None and "labels" in batch and logits.shape[-1] > 1:
            predictions = jnp.argmax(logits, axis=-1)
            keep = batch["labels"] != IGNORE_INDEX
            metrics["predictions"] = predictions
            metrics["accuracy"] = jnp.sum((predictions == batch["labels"]) & keep) / jnp.sum(keep)
        return metrics

    return jax.jit(eval_step)


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
    """Example indices of batch `step`: a pure function of (seed, step), so resuming at any step
    replays the same data order. Each epoch is a fresh permutation; int64 [batch_size]."""
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} examples")
    per_epoch = num_examples // batch_size
    epoch, offset = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[offset * batch_size : (offset + 1) * batch_size]
