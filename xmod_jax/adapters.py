"""Stacked language adapters: one `[L, ...]` parameter per adapter weight, rows picked per example.

`XmodAdapters` holds every language's bottleneck adapter of one layer; example b runs through
row `lang_ids[b]`, gathered inside jit (no Python loop over languages, no data-dependent shapes).
The language axis of each parameter is found by its logical name `lang`, never by position.
Axis legend as in `modeling.py`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmod_jax.activations import ACTIVATIONS
from xmod_jax.config import XmodConfig
from xmod_jax.layers import Dtype, XmodModule, constant_init, normal_init, take_rows

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
