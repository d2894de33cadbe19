"""The X-MOD encoder in Flax: embeddings, layers (attention, feed-forward, language adapter),
the layer stack (unrolled or scanned) and `XmodModel`. Axis legend in `xmod_jax.nn`.

Module and parameter names follow transformers' `XmodModel` (`embeddings`, `encoder/layer_3`,
`attention/self/query`, `output/adapter_modules/dense1`, ...), so `ckpts/mapping.py` is a short
rename table. Attention lives in `attention.py`, the stacked language adapters in `adapters.py`,
the decoder cache in `cache.py`.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from xmod_jax.activations import ACTIVATIONS
from xmod_jax.nn.adapters import XmodAdapters
from xmod_jax.nn.attention import XmodAttention, attention_mask
from xmod_jax.nn.cache import (
    XmodCache,
    XmodLayerCache,
    stack_caches,
    unstack_caches,
    write_at,
)
from xmod_jax.nn.constraints import RESIDUAL_AXES, constrain
from xmod_jax.nn.inputs import ModelInputs
from xmod_jax.nn.layers import (
    Embed,
    XmodModule,
    dense,
    layer_norm,
)
from xmod_jax.nn.module import XmodPreTrainedModule
from xmod_jax.nn.outputs import XmodModelOutput


# ------------------------------------------------------------------------------------ embeddings
def roberta_position_ids(
    input_ids: jax.Array, pad_token_id: int, past_length: jax.Array | int = 0
) -> jax.Array:
    """RoBERTa positions: real tokens count pad+1, pad+2, ... over non-pad tokens; pads keep pad.

    input_ids: int [B, T] -> int32 [B, T]. Derived from the pad *token*, not the attention mask,
    exactly as transformers and fairseq do. With a cache, transformers adds the number of cached
    positions (pads included) to the count.
    """
    not_pad = (input_ids != pad_token_id).astype(jnp.int32)
    return (jnp.cumsum(not_pad, axis=1) + past_length) * not_pad + pad_token_id


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

    def __call__(
        self, inputs: ModelInputs, deterministic: bool, past_length: jax.Array | int = 0
    ) -> jax.Array:
        pad = self.config.pad_token_id
        if inputs.input_ids is not None:
            words = self.word_embeddings(inputs.input_ids)  # [B, T, D]
            default_positions = roberta_position_ids(inputs.input_ids, pad, past_length)
        else:  # transformers ignores the cache length here too
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


class XmodOutput(XmodModule):
    """`output`: second FFN projection, residual, then the language adapter around it."""

    def setup(self) -> None:
        cfg, kw = self.config, self.dtypes
        self.dense = dense(cfg, cfg.hidden_size, ("mlp", "embed"), name="dense", **kw)
        self.LayerNorm = layer_norm(cfg, name="LayerNorm", **kw)
        if cfg.adapter_layer_norm:
            self.adapter_layer_norm = layer_norm(cfg, name="adapter_layer_norm", **kw)
        self.adapter_modules = XmodAdapters(cfg, **self.inherited)
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


@flax.struct.dataclass
class LayerContext:
    """What every layer needs besides its input, the same for all layers.

    self_mask: bool [B|1, 1, T|1, S] or None; index: cache write position; memory: encoder
    states [B, S_enc, D] for cross-attention (None once cached); cross_mask: bool
    [B|1, 1, 1, S_enc] or None. Static: whether cross-attention runs and which optional outputs
    the layers must return.
    """

    self_mask: jax.Array | None
    index: jax.Array | int = 0
    memory: jax.Array | None = None
    cross_mask: jax.Array | None = None
    cross: bool = flax.struct.field(pytree_node=False, default=False)
    output_hidden_states: bool = flax.struct.field(pytree_node=False, default=False)
    output_attentions: bool = flax.struct.field(pytree_node=False, default=False)


@flax.struct.dataclass
class LayerOutput:
    """One layer's extras: its input [B, T, D] (for hidden states), attention probs, cross-
    attention probs, and its updated cache; each None unless needed."""

    hidden: jax.Array | None = None
    attentions: jax.Array | None = None
    cross_attentions: jax.Array | None = None
    cache: XmodLayerCache | None = None


REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class XmodLayer(XmodModule):
    """One transformer block: self-attention, cross-attention (decoders with encoder states),
    feed-forward and the language adapter; [B, T, D] -> [B, T, D].

    Its signature is `nn.scan`'s: the hidden state is the carry, the layer cache is scanned,
    lang_ids and the context are broadcast.
    """

    deterministic: bool = True

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        cache: XmodLayerCache | None,
        lang_ids: jax.Array,
        ctx: LayerContext,
    ) -> tuple[jax.Array, LayerOutput]:
        kw, deterministic = self.inherited, self.deterministic
        x = constrain(x, RESIDUAL_AXES)  # [B, T, D]
        self_kv = None if cache is None else (cache.key, cache.value)
        a, probs, (key, value) = XmodAttention(self.config, name="attention", **kw)(
            x,
            ctx.self_mask,
            deterministic,
            kv=self_kv,
            index=ctx.index,
            output_attentions=ctx.output_attentions,
        )
        cross_probs, cross_kv = None, (None, None)
        if ctx.cross:
            cached = None
            if cache is not None and cache.cross_key is not None:
                cached = (cache.cross_key, cache.cross_value)
            a, cross_probs, cross_kv = XmodAttention(
                self.config, is_cross=True, name="crossattention", **kw
            )(
                a,
                ctx.cross_mask,
                deterministic,
                memory=ctx.memory,
                kv=cached,
                output_attentions=ctx.output_attentions,
            )
        pre_norm = self.config.pre_norm
        output = XmodOutput(self.config, name="output", **kw)
        h = XmodIntermediate(self.config, name="intermediate", **kw)(
            output.norm(a) if pre_norm else a
        )
        y = output(h, a, lang_ids, deterministic)
        extras = LayerOutput(
            hidden=x if ctx.output_hidden_states else None,
            attentions=probs,
            cross_attentions=cross_probs,
            cache=None if cache is None else XmodLayerCache(key, value, *cross_kv),
        )
        y = y if pre_norm else output.norm(y)
        return constrain(y, RESIDUAL_AXES), extras


class XmodEncoder(XmodModule):
    """The layer stack (plus the final LayerNorm of pre-norm models): an unrolled loop over
    `layer_0` ... `layer_{n-1}`, or with `scan_layers` one `nn.scan` over `layer`, whose
    parameters carry a leading `layers` axis (compile time stays flat as depth grows).

    Returns the last hidden state [B, T, D] and the per-layer extras, each a tuple over layers.
    Hidden states follow transformers: the embeddings, every layer's output, with the last entry
    being the final (normed) output.
    """

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        lang_ids: jax.Array,
        ctx: LayerContext,
        deterministic: bool,
        caches: tuple[XmodLayerCache, ...] | XmodLayerCache | None = None,
    ) -> tuple[jax.Array, LayerOutput]:
        cfg = self.config
        layer = XmodLayer
        remat, scan_layers = self.options.remat, self.options.scan_layers
        if remat != "none":
            layer = nn.remat(XmodLayer, policy=REMAT[remat], prevent_cse=not scan_layers)
        kw = {**self.inherited, "deterministic": deterministic}
        stacked_in = isinstance(caches, XmodLayerCache)
        if scan_layers:
            # Scanning reads and writes stacked caches; a per-layer cache is stacked (a copy per
            # call), so models with scan_layers want init_cache(..., scan_layers=True).
            stacked = caches if caches is None or stacked_in else stack_caches(caches)
            scan = nn.scan(
                layer,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(0, nn.broadcast, nn.broadcast),
                length=cfg.num_hidden_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, stacked_extras = scan(cfg, name="layer", **kw)(x, stacked, lang_ids, ctx)
            new_caches = stacked_extras.cache
            extras = [
                jax.tree.map(lambda a, i=i: a[i], stacked_extras.replace(cache=None))
                for i in range(cfg.num_hidden_layers)
            ]
        else:
            layer_caches = unstack_caches(caches) if stacked_in else caches
            extras = []
            for i in range(cfg.num_hidden_layers):
                cache = None if layer_caches is None else layer_caches[i]
                x, out = layer(cfg, name=f"layer_{i}", **kw)(x, cache, lang_ids, ctx)
                extras.append(out)
            new_caches = None if caches is None else tuple(e.cache for e in extras)
        if new_caches is not None and stacked_in != isinstance(new_caches, XmodLayerCache):
            # the layout out is the layout in (a jitted decode loop keeps one pytree structure)
            new_caches = stack_caches(new_caches) if stacked_in else unstack_caches(new_caches)
        if cfg.pre_norm:
            x = layer_norm(cfg, name="LayerNorm", **self.dtypes)(x)
        per_layer = LayerOutput(
            **{  # one tuple over layers per field, None when not produced
                field: None
                if getattr(extras[0], field) is None
                else tuple(getattr(e, field) for e in extras)
                for field in ("hidden", "attentions", "cross_attentions")
            },
            cache=new_caches,
        )
        if ctx.output_hidden_states:
            per_layer = per_layer.replace(hidden=(*per_layer.hidden, x))
        return x, per_layer


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
    """The bare X-MOD encoder (or decoder, with `is_decoder`): `last_hidden_state [B, T, D]`
    and, with the pooler, `pooler_output [B, D]`.

    Call it as every module of this package (see `XmodPreTrainedModule.__call__`); the heads call
    `forward` on already validated inputs so checks run once.
    """

    add_pooling_layer: bool = True

    hf_architecture: ClassVar[str] = "XmodModel"

    def setup(self) -> None:
        kw = self.inherited
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
        cache = inputs.past_key_values
        index = 0 if cache is None else cache.index
        x = self.embeddings(inputs, deterministic, past_length=index)  # [B, T, D]
        length = x.shape[1]
        key_mask = inputs.attention_mask
        if cache is not None:  # keys: every cached position plus this call's tokens
            new = jnp.ones(x.shape[:2], bool) if key_mask is None else key_mask.astype(bool)
            key_mask = write_at(cache.key_mask, new, index, 1)  # [B, S]
        ctx = LayerContext(
            self_mask=attention_mask(key_mask, length, self.config.is_decoder, offset=index),
            index=index,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        encoder_mask = None
        if self.config.add_cross_attention:
            if cache is not None and cache.has_cross_attention:
                encoder_mask = cache.cross_mask
            elif inputs.encoder_hidden_states is not None:
                encoder_mask = inputs.encoder_attention_mask
                if encoder_mask is None and cache is not None:  # the cache stores a full mask
                    encoder_mask = jnp.ones(inputs.encoder_hidden_states.shape[:2], bool)
            if encoder_mask is not None or inputs.encoder_hidden_states is not None:
                ctx = ctx.replace(
                    cross=True,
                    memory=inputs.encoder_hidden_states,
                    cross_mask=attention_mask(encoder_mask, length, causal=False),
                )
        last, extras = self.encoder(
            x, inputs.lang_ids, ctx, deterministic, None if cache is None else cache.layers
        )
        new_cache = None
        if cache is not None:
            # A call past the end wrote nothing (`write_at` keeps every cached position as it
            # was) and its outputs are poisoned instead of lying; the index still advances.
            last = jnp.where(index + length > cache.max_length, jnp.nan, last)
            new_cache = XmodCache(
                layers=extras.cache,
                key_mask=key_mask,
                index=index + length,
                cross_mask=None if encoder_mask is None else encoder_mask.astype(bool),
            )
        return XmodModelOutput(
            last_hidden_state=last,
            pooler_output=self.pooler(last) if self.add_pooling_layer else None,
            hidden_states=extras.hidden,
            attentions=extras.attentions if output_attentions else None,
            cross_attentions=extras.cross_attentions if output_attentions and ctx.cross else None,
            past_key_values=new_cache,
        )

    def word_embedding_table(self) -> jax.Array:
        """The word embedding table [V, D] (the tied LM decoder of the heads)."""
        return self.embeddings.word_embedding_table()
