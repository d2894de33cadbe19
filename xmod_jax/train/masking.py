"""Dynamic MLM masking inside jit, as RoBERTa / XLM-R / X-MOD pre-train.

`mask_tokens(key, input_ids, spec)` picks `round(rate * n)` of the n maskable tokens of every row
(stochastic rounding, as fairseq), at random; specials (`<s>`, `</s>`, `<pad>`, `<unk>`, `<mask>`)
are never picked. Each picked token becomes `<mask>` with probability 0.8, a random regular token
with 0.1, and stays itself with 0.1. The picked positions come back as a fixed-size [B, K] index
array (K = `spec.max_predictions(S)`), so the model computes its vocabulary projection at those K
positions only (`logits_positions`); unused slots carry the label -100.

A new key each step gives new masks each step (dynamic masking); a fixed key gives the fixed masks
of a held-out evaluation.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from xmod_jax.nn.losses import IGNORE_INDEX


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
    """What to mask. Token ids in `special_ids` are never masked; random replacements are drawn
    uniformly from [`first_regular_id`, `vocab_size`) minus `mask_id`."""

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    first_regular_id: int
    rate: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"masking rate must be in (0, 1), got {self.rate}")
        if self.mask_fraction < 0 or self.random_fraction < 0:
            raise ValueError("mask_fraction and random_fraction must be >= 0")
        if self.mask_fraction + self.random_fraction > 1.0:
            raise ValueError(
                f"mask_fraction + random_fraction = "
                f"{self.mask_fraction + self.random_fraction} exceeds 1"
            )
        if not 0 <= self.first_regular_id < self.vocab_size:
            raise ValueError(
                f"first_regular_id {self.first_regular_id} outside the vocabulary "
                f"(size {self.vocab_size})"
            )

    @classmethod
    def for_tokenizer(cls, tokenizer, **options) -> MaskingSpec:
        """The spec of an `XmodTokenizer` (XLM-R layout: specials 0..3, `<mask>` last)."""
        t = tokenizer
        specials = (t.bos_token_id, t.pad_token_id, t.eos_token_id, t.unk_token_id)
        return cls(
            mask_id=t.mask_token_id,
            vocab_size=len(t),
            special_ids=specials,
            first_regular_id=max(specials) + 1,
            **options,
        )

    def max_predictions(self, seq_len: int) -> int:
        """K: room for the picked positions of a full row (+1 for stochastic rounding)."""
        return min(seq_len, math.ceil(self.rate * seq_len) + 1)


def maskable(input_ids: jax.Array, spec: MaskingSpec) -> jax.Array:
    """bool [B, S]: tokens that may be picked (not special, not padding)."""
    specials = jnp.asarray(spec.special_ids + (spec.mask_id,), input_ids.dtype)
    return ~jnp.isin(input_ids, specials)


def mask_tokens(
    key: jax.Array, input_ids: jax.Array, spec: MaskingSpec
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mask a batch. input_ids int [B, S] ->
    (masked_ids int [B, S], positions int32 [B, K], labels int32 [B, K] with -100 in unused slots).
    """
    batch, seq_len = input_ids.shape
    k = spec.max_predictions(seq_len)
    pick_key, round_key, kind_key, random_key = jax.random.split(key, 4)

    can = maskable(input_ids, spec)
    n_can = jnp.sum(can, axis=1)
    # Stochastic rounding of rate * n: E[count] = rate * n exactly.
    expected = spec.rate * n_can
    count = jnp.floor(expected + jax.random.uniform(round_key, (batch,))).astype(jnp.int32)
    count = jnp.minimum(count, k)

    # The `count` maskable tokens with the smallest random scores; others score +inf.
    scores = jnp.where(can, jax.random.uniform(pick_key, (batch, seq_len)), jnp.inf)
    _, positions = jax.lax.top_k(-scores, k)  # [B, K], ascending score
    used = jnp.arange(k)[None, :] < count[:, None]
    positions = positions.astype(jnp.int32)
    originals = jnp.take_along_axis(input_ids, positions, axis=1)
    labels = jnp.where(used, originals, IGNORE_INDEX).astype(jnp.int32)

    # 80% <mask>, 10% a random regular token, 10% unchanged.
    kind = jax.random.uniform(kind_key, (batch, k))
    to_mask = used & (kind < spec.mask_fraction)
    to_random = (
        used & (kind >= spec.mask_fraction) & (kind < spec.mask_fraction + spec.random_fraction)
    )
    randoms = _random_regular(random_key, (batch, k), spec).astype(input_ids.dtype)
    new = jnp.where(to_mask, spec.mask_id, jnp.where(to_random, randoms, originals))
    rows = jnp.arange(batch)[:, None]
    # Unused slots write back the original token, so they change nothing.
    masked_ids = input_ids.at[rows, positions].set(jnp.where(used, new, originals))
    return masked_ids, positions, labels


def _random_regular(key: jax.Array, shape: tuple[int, ...], spec: MaskingSpec) -> jax.Array:
    """Uniform over [first_regular_id, vocab_size) without `mask_id` (and other specials there)."""
    excluded = sorted(
        i for i in set(spec.special_ids) | {spec.mask_id} if i >= spec.first_regular_id
    )
    high = spec.vocab_size - len(excluded)
    draw = jax.random.randint(key, shape, spec.first_regular_id, high)
    for i in excluded:  # shift past each excluded id, in increasing order
        draw = draw + (draw >= i)
    return draw
