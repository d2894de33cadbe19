"""Stacked language adapters: one `[L, ...]` parameter per adapter weight, rows picked per example.

`XmodAdapters` holds every language's bottleneck adapter of one layer; example b runs through
row `lang_ids[b]`, chosen inside jit (no Python loop over languages, no data-dependent shapes).
The language axis of each parameter is found by its logical name `lang`, never by position.
Axis legend in `xmod_jax.nn`; below, P = B * T rows.

Routing strategies (the `routing` module field), all equal to within float rounding:
- "gather" (default): gather each example's kernel [B, I, O] and run a batched matmul. Cost: the
  matmul FLOPs (2 P I O) plus reading B kernel copies (B I O); independent of L and of the mix.
- "single": the caller promises one language per batch; one kernel row is sliced and the whole
  batch is one [P, I] x [I, O] matmul, the cheapest form. Rows whose id differs from the first
  row's get NaN, never another language's answer.
- "auto": "single" when the batch holds one language (tested inside jit with `lax.cond`), else
  "gather". Both branches are compiled; the test costs a comparison over B ids.
- "ragged": rows sorted by language and grouped with `jax.lax.ragged_dot`. A real grouped matmul
  on TPU; XLA's CPU (and GPU) lowering computes every language densely, L times the FLOPs.
Out-of-range ids give NaN rows in every strategy. `benchmarks/routing.py` measures them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmod_jax.activations import ACTIVATIONS
from xmod_jax.nn.constraints import constrain
from xmod_jax.nn.layers import LANG_AXIS, XmodModule, constant_init, normal_init, take_rows
from xmod_jax.nn.options import ROUTINGS

KERNEL_AXES = {"dense1": (LANG_AXIS, "embed", "adapter"), "dense2": (LANG_AXIS, "adapter", "embed")}
BIAS_AXES = {"dense1": (LANG_AXIS, "adapter"), "dense2": (LANG_AXIS, "embed")}


def select_language(stacked: jax.Array, names: tuple[str | None, ...], lang_ids: jax.Array):
    """Rows of a stacked per-language parameter for each example: `[.., L, ..]` -> `[B, ..]`.

    The language axis is found by its logical name. An id outside [0, L) gives NaN weights
    (never another language's adapter): see `layers.take_rows`.
    """
    axis = names.index(LANG_AXIS)
    return jnp.moveaxis(take_rows(stacked, lang_ids, axis=axis), axis, 0)


def route_gather(x, kernel, bias, lang_ids, names):
    """x [B, T, I] -> [B, T, O] with each example's own kernel row."""
    k = select_language(kernel, names[0], lang_ids)  # [B, I, O]
    b = select_language(bias, names[1], lang_ids)  # [B, O]
    return jnp.einsum("BTI,BIO->BTO", x, k.astype(x.dtype)) + b[:, None, :].astype(x.dtype)


def route_single(x, kernel, bias, lang_ids, names):
    """One kernel row (lang_ids[0]) for the whole batch; other ids poison their rows."""
    first = lang_ids[:1]
    k = select_language(kernel, names[0], first)[0]  # [I, O]
    b = select_language(bias, names[1], first)[0]  # [O]
    y = jnp.einsum("BTI,IO->BTO", x, k.astype(x.dtype)) + b.astype(x.dtype)
    return jnp.where((lang_ids == first)[:, None, None], y, jnp.nan)


def route_auto(x, kernel, bias, lang_ids, names):
    """`route_single` when every id equals the first, else `route_gather`."""
    return jax.lax.cond(
        jnp.all(lang_ids == lang_ids[0]),
        lambda: route_single(x, kernel, bias, lang_ids, names),
        lambda: route_gather(x, kernel, bias, lang_ids, names),
    )


def route_ragged(x, kernel, bias, lang_ids, names):
    """Sort rows by language and run one grouped matmul (`jax.lax.ragged_dot`)."""
    batch, length, _ = x.shape
    num_languages = kernel.shape[names[0].index(LANG_AXIS)]
    k = jnp.moveaxis(kernel, names[0].index(LANG_AXIS), 0).astype(x.dtype)  # [L, I, O]
    valid = (lang_ids >= 0) & (lang_ids < num_languages)
    safe = jnp.where(valid, lang_ids, 0)
    order = jnp.argsort(safe, stable=True)  # examples grouped by language
    rows = x[order].reshape(batch * length, -1)  # [P, I]
    group_sizes = (jnp.bincount(safe, length=num_languages) * length).astype(jnp.int32)
    y = jax.lax.ragged_dot(rows, k, group_sizes).reshape(batch, length, -1)
    y = y[jnp.argsort(order)]  # back to the input order
    b = select_language(bias, names[1], lang_ids)  # NaN for bad ids
    return y + b[:, None, :].astype(x.dtype)


ROUTES = {
    "gather": route_gather,
    "single": route_single,
    "auto": route_auto,
    "ragged": route_ragged,
}
assert tuple(ROUTES) == ROUTINGS, "every routing named in nn/options.py has a route here"


def _gathered(names: tuple[str | None, ...]) -> tuple[str | None, ...]:
    """A stacked table's axis names with `lang` and `embed` whole; `adapter` as the rules say."""
    return tuple(None if n in (LANG_AXIS, "embed") else n for n in names)


class LanguageDense(XmodModule, kw_only=True):
    """A Linear per language: kernel [L, in, out], bias [L, out]; example b uses row lang_ids[b]."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, lang_ids: jax.Array) -> jax.Array:
        """x [B, T, in], lang_ids int32 [B] -> [B, T, out]."""
        cfg, kernel_axes, bias_axes = self.config, KERNEL_AXES[self.name], BIAS_AXES[self.name]
        shape = (cfg.num_languages, x.shape[-1], self.features)
        kernel = self.param("kernel", normal_init(cfg, kernel_axes), shape, self.param_dtype)
        bias = self.param(
            "bias", constant_init(0.0, bias_axes), (shape[0], shape[2]), self.param_dtype
        )
        # Whole along `lang` and `embed` inside the step, as FSDP gathers every weight: rows
        # picked from split tables would be rebuilt whole on every device (`nn.constraints`).
        kernel = constrain(kernel, _gathered(kernel_axes))
        bias = constrain(bias, _gathered(bias_axes))
        route = ROUTES[self.options.routing]
        return route(x.astype(self.dtype), kernel, bias, lang_ids, (kernel_axes, bias_axes))


class XmodAdapters(XmodModule):
    """All languages' bottleneck adapters of one layer: dense2(act(dense1(x))), [B, T, D]."""

    @nn.compact
    def __call__(self, x: jax.Array, lang_ids: jax.Array) -> jax.Array:
        cfg, kw = self.config, self.inherited
        h = LanguageDense(cfg, features=cfg.adapter_size, name="dense1", **kw)(x, lang_ids)
        h = ACTIVATIONS[cfg.hidden_act](h)  # [B, T, R]; no dropout inside the adapter
        return LanguageDense(cfg, features=cfg.hidden_size, name="dense2", **kw)(h, lang_ids)
