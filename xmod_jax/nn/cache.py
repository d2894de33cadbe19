"""The functional key/value cache of decoder models: an explicit pytree in and out of each call.

Shapes are fixed when the cache is made (`init_cache`), so a decode loop under `jax.jit` compiles
at most twice: once for the prompt, once for the one-token step. Axis letters as in
`xmod_jax.nn`; S is the cache length `max_length`.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from xmod_jax.config import XmodConfig
from xmod_jax.nn.layers import Dtype


@flax.struct.dataclass
class XmodLayerCache:
    """One layer: self-attention key / value [B, N, S, H]; cross-attention key / value
    [B, N, S_enc, H] once the encoder states have been projected (None before)."""

    key: jax.Array
    value: jax.Array
    cross_key: jax.Array | None = None
    cross_value: jax.Array | None = None


@flax.struct.dataclass
class XmodCache:
    """Decoder state between calls.

    layers: one `XmodLayerCache` per layer, or (`init_cache(..., scan_layers=True)`, for models
    with `scan_layers`) one `XmodLayerCache` whose arrays carry a leading layer axis, the layout
    `nn.scan` reads and writes; key_mask: bool [B, S], which cached positions hold real (unpadded)
    tokens; index: int32 [], positions filled so far; cross_mask: bool [B, S_enc], the encoder
    padding mask, stored with the projected encoder keys. Each call returns the layout it got.
    """

    layers: tuple[XmodLayerCache, ...] | XmodLayerCache
    key_mask: jax.Array
    index: jax.Array
    cross_mask: jax.Array | None = None

    @property
    def max_length(self) -> int:
        return self.key_mask.shape[1]

    @property
    def batch_size(self) -> int:
        return self.key_mask.shape[0]

    @property
    def is_stacked(self) -> bool:
        """Whether `layers` is one `XmodLayerCache` with a leading layer axis."""
        return isinstance(self.layers, XmodLayerCache)

    @property
    def num_layers(self) -> int:
        return self.layers.key.shape[0] if self.is_stacked else len(self.layers)

    @property
    def has_cross_attention(self) -> bool:
        """Whether the encoder keys / values are already in the cache (static)."""
        first = self.layers if self.is_stacked else self.layers[0]
        return first.cross_key is not None


def init_cache(
    config: XmodConfig,
    batch_size: int,
    max_length: int,
    dtype: Dtype = jnp.float32,
    scan_layers: bool = False,
) -> XmodCache:
    """An empty cache for `batch_size` sequences of up to `max_length` tokens (prompt included).

    `dtype` should be the model's computation dtype. Cross-attention keys are added by the first
    call that passes `encoder_hidden_states`. `scan_layers=True` stacks the layers (the layout a
    model with `scan_layers` uses without copying); either layout works with either model.
    """
    if not config.is_decoder:
        raise ValueError("init_cache needs a decoder config (is_decoder=True)")
    if not 1 <= max_length <= config.max_sequence_length:
        raise ValueError(
            f"max_length must be in [1, {config.max_sequence_length}] (the position table), "
            f"got {max_length}"
        )
    shape = (batch_size, config.num_attention_heads, max_length, config.head_dim)
    if scan_layers:
        shape = (config.num_hidden_layers, *shape)
    layer = XmodLayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
    return XmodCache(
        layers=layer if scan_layers else tuple(layer for _ in range(config.num_hidden_layers)),
        key_mask=jnp.zeros((batch_size, max_length), bool),
        index=jnp.zeros((), jnp.int32),
    )


def stack_caches(layers: tuple[XmodLayerCache, ...]) -> XmodLayerCache:
    """Per-layer caches -> one cache whose arrays have a leading layer axis."""
    return jax.tree.map(lambda *c: jnp.stack(c), *layers)


def unstack_caches(stacked: XmodLayerCache) -> tuple[XmodLayerCache, ...]:
    """Inverse of `stack_caches`."""
    return tuple(jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(stacked.key.shape[0]))


def write_at(cached: jax.Array, new: jax.Array, index: jax.Array, axis: int) -> jax.Array:
    """`cached` with `new` written at `index` along `axis` (the sequence axis); `cached`
    unchanged when `new` does not fit (index + new length > cache length)."""
    start = [0] * cached.ndim
    start[axis] = index
    fits = index + new.shape[axis] <= cached.shape[axis]
    # dynamic_update_slice clamps its start, so an overflowing write would land on the last
    # positions: write back what the same (clamped) window already holds instead.
    new = new.astype(cached.dtype)
    held = jax.lax.dynamic_slice(cached, start, new.shape)
    return jax.lax.dynamic_update_slice(cached, jnp.where(fits, new, held), start)
