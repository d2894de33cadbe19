"""Attention: visibility masks, multi-head attention, and the attention block.

One block class serves self-attention (`attention`) and cross-attention (`crossattention`,
decoders with `add_cross_attention`), with or without the functional key/value cache. Keys and
values are laid out [B, N, S, H], the cache's layout. Axis legend in `xmod_jax.nn`.

Two implementations: "fused" calls `jax.nn.dot_product_attention` (cuDNN's fused kernel where
XLA picks it, XLA's softmax attention elsewhere) and is used unless attention probabilities are
requested (`output_attentions`) or attention-probability dropout is active (training with
`attention_probs_dropout_prob > 0`); then, and with `attention_impl="explicit"`, the explicit
path computes float32 scores, adds transformers' additive mask, softmaxes in float32 and
applies dropout. Both give the same outputs up to float rounding.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmod_jax.nn.cache import write_at
from xmod_jax.nn.layers import XmodModule, dense, layer_norm

MASK_VALUE = float(jnp.finfo(jnp.float32).min)  # what transformers adds to masked scores
KeyValue = tuple[jax.Array, jax.Array]


def attention_mask(
    key_mask: jax.Array | None, length: int, causal: bool, offset: jax.Array | int = 0
) -> jax.Array | None:
    """Which keys each query may see: bool [B|1, 1, T|1, S], or None when every key is visible.

    key_mask: [B, S] (nonzero = real token) or None, which hides no key (transformers attends to
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
    return keep


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
        self,
        x: jax.Array,
        kv: KeyValue,
        keep: jax.Array | None,
        deterministic: bool,
        output_attentions: bool = False,
    ) -> tuple[jax.Array, jax.Array | None]:
        """x [B, T, D], kv [B, N, S, H], keep bool [B|1, 1, T|1, S] -> context [B, T, N, H] and,
        on the explicit path, probs float32 [B, N, T, S] (None on the fused path)."""
        keys, values = kv
        q = self.query(x)  # [B, T, N, H]
        dropout_active = not deterministic and self.config.attention_probs_dropout_prob > 0
        if self.options.attention_impl == "fused" and not (output_attentions or dropout_active):
            context = jax.nn.dot_product_attention(
                q,
                keys.transpose(0, 2, 1, 3),  # [B, S, N, H]
                values.transpose(0, 2, 1, 3),
                mask=keep,
                scale=self.config.head_dim**-0.5,
            )
            return context, None
        scores = jnp.einsum("BTNH,BNSH->BNTS", q, keys) * self.config.head_dim**-0.5
        scores = scores.astype(jnp.float32)  # softmax in float32 even under bf16
        if keep is not None:
            scores = scores + jnp.where(keep, 0.0, MASK_VALUE)  # as transformers adds its mask
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
    Returns (y [B, T, D], probs [B, N, T, S] or None, the keys and values attended over).
    """

    is_cross: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        keep: jax.Array | None,
        deterministic: bool,
        *,
        memory: jax.Array | None = None,
        kv: KeyValue | None = None,
        index: jax.Array | int = 0,
        output_attentions: bool = False,
    ) -> tuple[jax.Array, jax.Array | None, KeyValue]:
        output = XmodSelfOutput(self.config, name="output", **self.inherited)
        attend = XmodSelfAttention(self.config, name="self", **self.inherited)
        pre_norm = self.config.pre_norm
        h = output.norm(x) if pre_norm else x
        if self.is_cross and kv is not None:
            keys, values = kv  # projected by an earlier call
        else:
            keys, values = attend.project_kv(memory if self.is_cross else h)
            if kv is not None:  # self-attention cache: append this call's keys and values
                keys, values = write_at(kv[0], keys, index, 2), write_at(kv[1], values, index, 2)
        context, probs = attend(h, (keys, values), keep, deterministic, output_attentions)
        y = output(context, x, deterministic)  # [B, T, D]
        return (y if pre_norm else output.norm(y)), probs, (keys, values)
