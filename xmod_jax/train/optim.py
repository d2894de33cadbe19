"""`make_optimizer`: AdamW with fairseq's fine-tuning defaults, freezing via `multi_transform`.

Layout of the transformation:

    multi_transform({
        "trainable": [row mask] -> [clip by global norm] -> AdamW -> [row mask], [accumulated],
        "frozen":    set_to_zero(),
    }, labels)

Frozen leaves carry no optimizer state at all; clipping measures the global norm over trainable
leaves only (as torch's `clip_grad_norm_` over the parameters that require grad); gradient
accumulation keeps accumulators for trainable leaves only. Row masks (the `("new_language",
code)` preset) zero the other languages' gradient rows before AdamW and their update rows after
it, weight decay included, so those rows stay bit-identical.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from xmod_jax.config import XmodConfig
from xmod_jax.train.freezing import FROZEN, TRAINABLE, freeze_labels, row_masks


def learning_rate_schedule(
    learning_rate: float | optax.Schedule,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    schedule: str = "linear",
    decay_steps: int | None = None,
) -> float | optax.Schedule:
    """A float stays constant unless warmup_steps / total_steps ask for linear warmup and then
    "linear" or "cosine" decay to 0 at total_steps; an optax schedule passes through.
    `decay_steps` (with total_steps) holds the peak after warmup and decays over the last
    `decay_steps` steps only (warmup-stable-decay); None decays over all steps after warmup."""
    if callable(learning_rate) or (not warmup_steps and total_steps is None):
        return learning_rate
    if schedule not in ("linear", "cosine"):
        raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
    if total_steps is None:
        return optax.linear_schedule(0.0, learning_rate, warmup_steps)
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
    after_warmup = total_steps - warmup_steps
    if decay_steps is None:
        decay_steps = after_warmup
    if not 0 < decay_steps <= after_warmup:
        raise ValueError(
            f"decay_steps ({decay_steps}) must be in [1, total_steps - warmup_steps = "
            f"{after_warmup}]"
        )
    if schedule == "linear":
        decay = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    else:
        decay = optax.cosine_decay_schedule(learning_rate, decay_steps)
    pieces, boundaries = [], []
    if warmup_steps:
        pieces.append(optax.linear_schedule(0.0, learning_rate, warmup_steps))
        boundaries.append(warmup_steps)
    if decay_steps < after_warmup:
        pieces.append(optax.constant_schedule(learning_rate))
        boundaries.append(total_steps - decay_steps)
    if not boundaries:
        return decay
    return optax.join_schedules([*pieces, decay], boundaries)


def weight_decay_mask(params: Any) -> Any:
    """True where AdamW decays: every leaf except biases and LayerNorm scales."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) not in ("bias", "scale"), params
    )


class RowMaskState(NamedTuple):
    inner: optax.OptState


def mask_rows(inner: optax.GradientTransformation, masks: Any) -> optax.GradientTransformation:
    """Multiply gradients by `masks` before `inner` and its updates after (None: no mask)."""

    def apply(tree: Any) -> Any:
        return jax.tree.map(
            lambda x, m: x if m is None else x * m, tree, masks, is_leaf=lambda m: m is None
        )

    def init(params: Any) -> RowMaskState:
        return RowMaskState(inner.init(params))

    def update(updates: Any, state: RowMaskState, params: Any = None) -> tuple[Any, RowMaskState]:
        updates, inner_state = inner.update(apply(updates), state.inner, params)
        return apply(updates), RowMaskState(inner_state)

    return optax.GradientTransformation(init, update)


def make_optimizer(
    params: Any,
    *,
    learning_rate: float | optax.Schedule,
    freeze: Any = "xmod_paper",
    config: XmodConfig | None = None,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    schedule: str = "linear",
    decay_steps: int | None = None,
    clip_norm: float | None = None,
    accumulate_steps: int = 1,
    b1: float = 0.9,
    b2: float = 0.98,
    eps: float = 1e-6,
    weight_decay: float = 0.01,
) -> optax.GradientTransformation:
    """AdamW (fairseq fine-tuning defaults: betas 0.9 / 0.98, eps 1e-6, weight decay 0.01 off
    biases and LayerNorm scales) for `params`, freezing by a preset or rules (see
    `xmod_jax.train.freezing`); `freeze=None` trains everything."""
    lr = learning_rate_schedule(learning_rate, warmup_steps, total_steps, schedule, decay_steps)
    labels = freeze_labels(params, freeze, config)
    trainable = optax.chain(
        *([optax.clip_by_global_norm(clip_norm)] if clip_norm else []),
        optax.adamw(
            lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=weight_decay_mask
        ),  # fmt: skip
    )
    masks = row_masks(params, freeze, config) if freeze else None
    if masks is not None:
        trainable = mask_rows(trainable, _select(masks, labels))
    if accumulate_steps > 1:
        trainable = optax.MultiSteps(trainable, every_k_schedule=accumulate_steps)
    elif accumulate_steps < 1:
        raise ValueError(f"accumulate_steps must be >= 1, got {accumulate_steps}")
    return optax.multi_transform({TRAINABLE: trainable, FROZEN: optax.set_to_zero()}, labels)


def _select(masks: Any, labels: Any) -> Any:
    """Masks of trainable leaves, as the trainable branch sees its (masked) tree."""
    return jax.tree.map(
        lambda m, label: m if label == TRAINABLE else optax.MaskedNode(),
        masks,
        labels,
        is_leaf=lambda m: m is None,
    )
