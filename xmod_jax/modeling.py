"""The X-MOD encoder in Flax: embeddings, attention, feed-forward, stacked language adapters.

Axis legend, used in every einsum and shape comment of this package:
  B batch, T query positions, S key positions, D hidden, N heads, H head dim,
  F intermediate (FFN), R adapter bottleneck, L languages, C choices, V vocabulary.

Module and parameter names follow transformers' `XmodModel` (`embeddings`, `encoder/layer_3`,
`attention/self/query`, `output/adapter_modules/dense1`, ...), so `conversion.py` is a short rename
table. Language adapters are stacked: one `[L, ...]` parameter per adapter weight, rows gathered by
`lang_ids` per example inside jit (no Python loop over languages, no data-dependent shapes).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmod_jax.activations import ACTIVATIONS
from xmod_jax.base import XmodPreTrainedModule
from xmod_jax.config import XmodConfig
from xmod_jax.inputs import ModelInputs
from xmod_jax.layers import (
    Dtype,
    Embed,
    XmodModule,
    constant_init,
    dense,
    layer_norm,
    normal_init,
    take_rows,
)
from xmod_jax.outputs import XmodModelOutput

MASK_VALUE = float(jnp.finfo(jnp.float32).min)  # what transformers adds to masked scores


# ------------------------------------------------------------------------------------ embeddings
def roberta_position_ids(input_ids: jax.Array, pad_token_id: int) -> jax.Array:
    """RoBERTa positions: real tokens count pad+1, pad+2, ... over non-pad tokens; pads keep pad.

    input_ids: int [B, T] -> int32 [B, T]. Derived from the pad *token*, not the attention mask,
    exactly as transformers and fairseq do.
    """
    not_pad = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(not_pad, axis=1) * not_pad + pad_token_id


def sequential_position_ids(batch: int, length: int, pad_token_id: int) -> jax.Array:
    """Positions for `inputs_embeds` (no pad detection possible): pad+1 ... pad+T, [B, T]."""
    positions = jnp.arange(pad_token_id + 1, length + pad_token_id + 1, dtype=jnp.int32)
    return jnp.broadcast_to(positions, (batch, length))


class XmodEmbeddings(XmodModule):
    """Word + token-type + position embeddings, LayerNorm, dropout -> [B, T, D]."""

    def setup(self) -> None:
        cfg, kw = self.config, self.dtypes
        pad = cfg.pad_token_id
        self.word_embeddings = Embed(cfg, cfg.vocab_size, ("vocab", "embed"), pad, **kw)
        self.position_embeddings = Embed(
            cfg, cfg.max_position_embeddings, (None, "embed"), pad, **kw
        )
        self.token_type_embeddings = Embed(cfg, cfg.type_vocab_size, (None, "embed"), None, **kw)
        self.LayerNorm = layer_norm(cfg, name="LayerNorm", **kw)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def __call__(self, inputs: ModelInputs, deterministic: bool) -> jax.Array:
        pad = self.config.pad_token_id
        if inputs.input_ids is not None:
            words = self.word_embeddings(inputs.input_ids)  # [B, T, D]
            default_positions = roberta_position_ids(inputs.input_ids, pad)
        else:
            words = inputs.inputs_embeds.astype(self.dtype)  # [B, T, D]
            default_positions = sequential_position_ids(*words.shape[:2], pad)
        positions = default_positions if inputs.position_ids is None else inputs.position_ids
        token_types = inputs.token_type_ids
        if token_types is None:
            token_types = jnp.zeros(words.shape[:2], jnp.int32)
        x = words + self.token_type_embeddings(token_types) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x), deterministic=deterministic)

    def word_embedding_table(self) -> jax.Array:
        return self.word_embeddings.table()  # [V, D]


# ------------------------------------------------------------------------------------- attention
def attention_bias(attention_mask: jax.Array | None, length: int, causal: bool) -> jax.Array | None:
    """Additive float32 bias [B|1, 1, T|1, S]: 0 where a key may be seen, MASK_VALUE elsewhere.

    `attention_mask=None` masks nothing, as in transformers (pads are attended).
    """
    keep = None
    if attention_mask is not None:
        keep = attention_mask.astype(bool)[:, None, None, :]  # [B, 1, 1, S]
    if causal:
        lower = jnp.tril(jnp.ones((length, length), bool))[None, None]  # [1, 1, T, S]
        keep = lower if keep is None else keep & lower
    if keep is None:
        return None
    return jnp.where(keep, 0.0, MASK_VALUE).astype(jnp.float32)


class XmodSelfAttention(XmodModule):
    """Multi-head scaled dot-product attention; returns context [B, T, N, H], probs [B, N, T, S]."""

    def setup(self) -> None:
        cfg, kw = self.config, self.dtypes
        heads = (cfg.num_attention_heads, cfg.head_dim)
        self.query = dense(cfg, heads, ("embed", "heads", "kv"), name="query", **kw)
        self.key = dense(cfg, heads, ("embed", "heads", "kv"), name="key", **kw)
        self.value = dense(cfg, heads, ("embed", "heads", "kv"), name="value", **kw)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def __call__(
        self, x: jax.Array, bias: jax.Array | None, deterministic: bool
    ) -> tuple[jax.Array, jax.Array]:
        q, k, v = self.query(x), self.key(x), self.value(x)  # [B, T, N, H] each
        scores = jnp.einsum("BTNH,BSNH->BNTS", q, k) * self.config.head_dim**-0.5
        scores = scores.astype(jnp.float32)  # softmax in float32 even under bf16
        if bias is not None:
            scores = scores + bias
        probs = jax.nn.softmax(scores, axis=-1)  # [B, N, T, S]
        dropped = self.dropout(probs, deterministic=deterministic)
        context = jnp.einsum("BNTS,BSNH->BTNH", dropped.astype(self.dtype), v)
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
    """Self-attention block: post-norm LN(x + attn(x)) or pre-norm x + attn(LN(x))."""

    @nn.compact
    def __call__(
        self, x: jax.Array, bias: jax.Array | None, deterministic: bool
    ) -> tuple[jax.Array, jax.Array]:
        kw = self.dtypes
        output = XmodSelfOutput(self.config, name="output", **kw)
        attend = XmodSelfAttention(self.config, name="self", **kw)
        pre_norm = self.config.pre_norm
        context, probs = attend(output.norm(x) if pre_norm else x, bias, deterministic)
        y = output(context, x, deterministic)  # [B, T, D]
        return (y if pre_norm else output.norm(y)), probs


# ------------------------------------------------------------------------ feed-forward + adapters
class XmodIntermediate(XmodModule):
    """First FFN projection and activation: [B, T, D] -> [B, T, F]."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        h = dense(
            cfg,
            cfg.intermediate_size,
            ("embed", "mlp"),
            **self.dtypes,
            name="dense",
        )(x)
        return ACTIVATIONS[cfg.hidden_act](h)


KERNEL_AXES = {"dense1": ("lang", "embed", "adapter"), "dense2": ("lang", "adapter", "embed")}
BIAS_AXES = {"dense1": ("lang", "adapter"), "dense2": ("lang", "embed")}


def select_language(stacked: jax.Array, names: tuple[str | None, ...], lang_ids: jax.Array):
    """Rows of a stacked per-language parameter for each example: `[.., L, ..]` -> `[B, ..]`.

    The language axis is found by its logical name. An id outside [0, L) gives NaN weights
    (never another language's adapter): see `layers.take_rows`.
    """
    axis = names.index("lang")
    return jnp.moveaxis(take_rows(stacked, lang_ids, axis=axis), axis, 0)


class LanguageDense(nn.Module):
    """A Linear per language: kernel [L, in, out], bias [L, out]; example b uses row lang_ids[b]."""

    config: XmodConfig
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lang_ids: jax.Array) -> jax.Array:
        """x [B, T, in], lang_ids int32 [B] -> [B, T, out]."""
        cfg, kernel_axes, bias_axes = self.config, KERNEL_AXES[self.name], BIAS_AXES[self.name]
        shape = (cfg.num_languages, x.shape[-1], self.features)
        kernel = self.param("kernel", normal_init(cfg, kernel_axes), shape, self.param_dtype)
        bias = self.param(
            "bias", constant_init(0.0, bias_axes), (shape[0], shape[2]), self.param_dtype
        )
        kernel = select_language(kernel, kernel_axes, lang_ids).astype(self.dtype)  # [B, in, out]
        bias = select_language(bias, bias_axes, lang_ids).astype(self.dtype)  # [B, out]
        return jnp.einsum("BTI,BIO->BTO", x.astype(self.dtype), kernel) + bias[:, None, :]


class XmodAdapters(XmodModule):
    """All languages' bottleneck adapters of one layer: dense2(act(dense1(x))), [B, T, D]."""

    @nn.compact
    def __call__(self, x: jax.Array, lang_ids: jax.Array) -> jax.Array:
        cfg, kw = self.config, self.dtypes
        h = LanguageDense(cfg, cfg.adapter_size, name="dense1", **kw)(x, lang_ids)  # [B, T, R]
        h = ACTIVATIONS[cfg.hidden_act](h)  # no dropout inside the adapter (transformers)
        return LanguageDense(cfg, cfg.hidden_size, name="dense2", **kw)(h, lang_ids)  # [B, T, D]


class XmodOutput(XmodModule):
    """`output`: second FFN projection, residual, then the language adapter around it."""

    def setup(self) -> None:
        cfg, kw = self.config, self.dtypes
        self.dense = dense(cfg, cfg.hidden_size, ("mlp", "embed"), name="dense", **kw)
        self.LayerNorm = layer_norm(cfg, name="LayerNorm", **kw)
        if cfg.adapter_layer_norm:
            self.adapter_layer_norm = layer_norm(cfg, name="adapter_layer_norm", **kw)
        self.adapter_modules = XmodAdapters(cfg, **kw)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def norm(self, x: jax.Array) -> jax.Array:
        return self.LayerNorm(x)

    def __call__(
        self, h: jax.Array, residual: jax.Array, lang_ids: jax.Array, deterministic: bool
    ) -> jax.Array:
        """h [B, T, F], residual [B, T, D], lang_ids [B] -> [B, T, D] (before the post-norm LN)."""
        cfg = self.config
        x = self.dropout(self.dense(h), deterministic=deterministic) + residual  # [B, T, D]
        if cfg.adapter_layer_norm:
            normed = self.adapter_layer_norm(x)
        elif cfg.adapter_reuse_layer_norm:
            normed = self.LayerNorm(x)  # the FFN LayerNorm, reused (xmod-base)
        else:
            normed = x
        adapter_residual = normed if cfg.ln_before_adapter else x
        adapted = self.adapter_modules(normed, lang_ids)
        return self.dropout(adapted, deterministic=deterministic) + adapter_residual


class XmodLayer(XmodModule):
    """One transformer block with its language adapter: [B, T, D] -> [B, T, D]."""

    @nn.compact
    def __call__(
        self, x: jax.Array, lang_ids: jax.Array, bias: jax.Array | None, deterministic: bool
    ) -> tuple[jax.Array, jax.Array]:
        kw = self.dtypes
        pre_norm = self.config.pre_norm
        a, probs = XmodAttention(self.config, name="attention", **kw)(x, bias, deterministic)
        output = XmodOutput(self.config, name="output", **kw)
        h = XmodIntermediate(self.config, name="intermediate", **kw)(
            output.norm(a) if pre_norm else a
        )
        y = output(h, a, lang_ids, deterministic)
        return (y if pre_norm else output.norm(y)), probs


class XmodEncoder(XmodModule):
    """The layer stack (plus the final LayerNorm of pre-norm models).

    Returns (last [B, T, D], hidden states or None, attention probs or None). Hidden states follow
    transformers: the embeddings, every layer's output, with the last entry being the final
    (normed) output.
    """

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        lang_ids: jax.Array,
        bias: jax.Array | None,
        deterministic: bool,
        output_hidden_states: bool,
        output_attentions: bool,
    ) -> tuple[jax.Array, tuple[jax.Array, ...] | None, tuple[jax.Array, ...] | None]:
        cfg, kw = self.config, self.dtypes
        hidden, attentions = [x], []
        for i in range(cfg.num_hidden_layers):
            x, probs = XmodLayer(cfg, name=f"layer_{i}", **kw)(x, lang_ids, bias, deterministic)
            hidden.append(x)
            attentions.append(probs)
        if cfg.pre_norm:
            x = layer_norm(cfg, name="LayerNorm", **kw)(x)
            hidden[-1] = x
        return (
            x,
            tuple(hidden) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )


class XmodPooler(XmodModule):
    """tanh(dense(h[:, 0])): [B, T, D] -> [B, D]."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        first = x[:, 0]  # [B, D]
        return jnp.tanh(
            dense(
                cfg,
                cfg.hidden_size,
                ("embed", "mlp"),
                name="dense",
                **self.dtypes,
            )(first)
        )


class XmodModel(XmodPreTrainedModule):
    """The bare X-MOD encoder: `last_hidden_state [B, T, D]` and, with the pooler, `pooler_output`.

    Call it as every module of this package (see `XmodPreTrainedModule.__call__`); the heads call
    `forward` on already validated inputs so checks run once.
    """

    add_pooling_layer: bool = True

    hf_architecture: ClassVar[str] = "XmodModel"

    def setup(self) -> None:
        kw = self.dtypes
        self.embeddings = XmodEmbeddings(self.config, **kw)
        self.encoder = XmodEncoder(self.config, **kw)
        if self.add_pooling_layer:
            self.pooler = XmodPooler(self.config, **kw)

    def forward(
        self,
        inputs: ModelInputs,
        *,
        deterministic: bool,
        output_hidden_states: bool,
        output_attentions: bool,
    ) -> XmodModelOutput:
        x = self.embeddings(inputs, deterministic)  # [B, T, D]
        bias = attention_bias(inputs.attention_mask, x.shape[1], self.config.is_decoder)
        last, hidden, attentions = self.encoder(
            x, inputs.lang_ids, bias, deterministic, output_hidden_states, output_attentions
        )
        return XmodModelOutput(
            last_hidden_state=last,
            pooler_output=self.pooler(last) if self.add_pooling_layer else None,
            hidden_states=hidden,
            attentions=attentions,
        )

    def word_embedding_table(self) -> jax.Array:
        """The word embedding table [V, D] (the tied LM decoder of the heads)."""
        return self.embeddings.word_embedding_table()
