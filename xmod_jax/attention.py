"""Attention: masks as additive biases, multi-head attention, and the attention block.

One block class serves self-attention (`attention`) and cross-attention (`crossattention`,
decoders with `add_cross_attention`), with or without the functional key/value cache. Keys and
values are laid out [B, N, S, H], the cache's layout. Axis legend as in `modeling.py`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmod_jax.cache import write_at
from xmod_jax.layers import XmodModule, dense, layer_norm

MASK_VALUE = float(jnp.finfo(jnp.float32).min)  # what transformers adds to masked scores
KeyValue = tuple[jax.Array, jax.Array]


def attention_bias(
    key_mask: jax.Array | None, length: int, causal: bool, offset: jax.Array | int = 0
) -> jax.Array | None:
    """Additive float32 bias [B|1, 1, T|1, S]: 0 where a key may be seen, MASK_VALUE elsewhere.

    key_mask: [B, S] (nonzero = real token) or None, which masks no key (transformers attends to
    pads when no attention_mask is given). causal: query t, at absolute position offset + t, sees
    keys 0 .. offset + t only; without key_mask the keys are the T queries themselves.
    """
    keep = None
    if key_mask is not None:
        keep = key_mask.astype(bool)[:, None, None, :]  # [B, 1, 1, S]
    if causal:
        num_keys = length if key_mask is None else key_mask.shape[1]
        query_pos = offset + jnp.arange(length)[:, None]  # [T, 1]
        lower = (jnp.arange(num_keys)[None, :] <= query_pos)[None, None]  # [1, 1, T, S]
        keep = lower if keep is None else keep & lower
    if keep is None:
        return None
    return jnp.where(keep, 0.0, MASK_VALUE).astype(jnp.float32)


class XmodSelfAttention(XmodModule):
    """`attention.self` / `crossattention.self`: query, key and value projections and
    scaled dot-product attention."""

    def setup(self) -> None:
        cfg, kw = self.config, self.dtypes
        heads = (cfg.num_attention_heads, cfg.head_dim)
        self.query = dense(cfg, heads, ("embed", "heads", "kv"), name="query", **kw)
        self.key = dense(cfg, heads, ("embed", "heads", "kv"), name="key", **kw)
        self.value = dense(cfg, heads, ("embed", "heads", "kv"), name="value", **kw)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def project_kv(self, states: jax.Array) -> KeyValue:
        """states [B, S, D] -> keys, values [B, N, S, H]."""
        return (
            self.key(states).transpose(0, 2, 1, 3),
            self.value(states).transpose(0, 2, 1, 3),
        )

    def __call__(
        self, x: jax.Array, kv: KeyValue, bias: jax.Array | None, deterministic: bool
    ) -> tuple[jax.Array, jax.Array]:
        """x [B, T, D], kv [B, N, S, H] -> context [B, T, N, H], probs float32 [B, N, T, S]."""
        keys, values = kv
        q = self.query(x)  # [B, T, N, H]
        scores = jnp.einsum("BTNH,BNSH->BNTS", q, keys) * self.config.head_dim**-0.5
        scores = scores.astype(jnp.float32)  # softmax in float32 even under bf16
        if bias is not None:
            scores = scores + bias
        probs = jax.nn.softmax(scores, axis=-1)  # [B, N, T, S]
        dropped = self.dropout(probs, deterministic=deterministic)
        context = jnp.einsum("BNTS,BNSH->BTNH", dropped.astype(self.dtype), values)
        return context, probs


class XmodSelfOutput(XmodModule):
    """`attention.output`: projection back to D plus the block's LayerNorm."""

    def setup(self) -> None:
        cfg, kw = self.config, self.dtypes
        self.dense = dense(
            cfg, cfg.hidden_size, ("heads", "kv", "embed"), axis=(-2, -1), name="dense", **kw
        )
        self.LayerNorm = layer_norm(cfg, name="LayerNorm", **kw)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def norm(self, x: jax.Array) -> jax.Array:
        return self.LayerNorm(x)

    def __call__(self, context: jax.Array, residual: jax.Array, deterministic: bool) -> jax.Array:
        """context [B, T, N, H], residual [B, T, D] -> [B, T, D] (no norm: the caller places it)."""
        return self.dropout(self.dense(context), deterministic=deterministic) + residual


class XmodAttention(XmodModule):
    """Attention block: post-norm LN(x + attn(x)) or pre-norm x + attn(LN(x)).

    Self-attention (`is_cross=False`) attends over x; with a cache `kv` it writes this call's keys
    and values at `index` and attends over the whole cache. Cross-attention attends over the
    encoder states `memory` [B, S_enc, D], or over `kv` when the cache already holds them.
    Returns (y [B, T, D], probs [B, N, T, S], the keys and values attended over).
    """

    is_cross: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        bias: jax.Array | None,
        deterministic: bool,
        *,
        memory: jax.Array | None = None,
        kv: KeyValue | None = None,
        index: jax.Array | int = 0,
    ) -> tuple[jax.Array, jax.Array, KeyValue]:
        output = XmodSelfOutput(self.config, name="output", **self.dtypes)
        attend = XmodSelfAttention(self.config, name="self", **self.dtypes)
        pre_norm = self.config.pre_norm
        h = output.norm(x) if pre_norm else x
        if self.is_cross and kv is not None:
            keys, values = kv  # projected by an earlier call
        else:
            keys, values = attend.project_kv(memory if self.is_cross else h)
            if kv is not None:  # self-attention cache: append this call's keys and values
                keys, values = write_at(kv[0], keys, index, 2), write_at(kv[1], values, index, 2)
        context, probs = attend(h, (keys, values), bias, deterministic)
        y = output(context, x, deterministic)  # [B, T, D]
        return (y if pre_norm else output.norm(y)), probs, (keys, values)
