"""Adding and dropping languages after training: pure functions on (config, params).

The language axis of every stacked adapter leaf is found by its logical name (`lang`), so both
functions work on the params of every head, bare encoder included. Existing languages keep their
rows untouched, hence bit-identical outputs.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from xmod_jax.config import XmodConfig
from xmod_jax.nn.axes import params_axes
from xmod_jax.nn.layers import LANG_AXIS


def _map_language_leaves(params: Any, config: XmodConfig, fn) -> Any:
    """Apply `fn(leaf, lang_axis, path)` to every leaf with a `lang` axis."""
    axes = params_axes(params, config)
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf, names: (
            fn(leaf, names.index(LANG_AXIS), path) if LANG_AXIS in names else leaf
        ),
        params,
        axes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def add_language(
    config: XmodConfig,
    params: Any,
    code: str,
    init_from: str | None = None,
    rng: jax.Array | int | None = None,
) -> tuple[XmodConfig, Any]:
    """Append language `code` (lang id = old number of languages).

    Its adapter rows copy `init_from`'s, or are drawn as transformers initialises adapters
    (kernels N(0, initializer_range), biases 0) from `rng` (default key 0).
    """
    if code in config.languages:
        raise ValueError(
            f"language {code!r} already exists (lang id {config.languages.index(code)})"
        )
    source = None if init_from is None else int(config.lang_ids(init_from))
    if rng is None or isinstance(rng, int):
        rng = jax.random.key(rng or 0)

    def append(leaf: jax.Array, axis: int, path: Any) -> jax.Array:
        if source is not None:
            row = jnp.take(leaf, jnp.asarray([source]), axis=axis)
        elif path[-1].key == "kernel":
            key = jax.random.fold_in(rng, zlib.crc32("/".join(p.key for p in path).encode()))
            shape = list(leaf.shape)
            shape[axis] = 1
            row = config.initializer_range * jax.random.normal(key, shape, leaf.dtype)
        else:
            row = jnp.zeros_like(jnp.take(leaf, jnp.asarray([0]), axis=axis))
        return jnp.concatenate([leaf, row.astype(leaf.dtype)], axis=axis)

    new_params = _map_language_leaves(params, config, append)
    return dataclasses.replace(config, languages=(*config.languages, code)), new_params


def select_languages(
    config: XmodConfig, params: Any, codes: Sequence[str]
) -> tuple[XmodConfig, Any]:
    """Keep only `codes`, in that order (their lang ids become positions in `codes`).

    `default_language` is cleared when it is dropped. Raises on unknown or repeated codes.
    """
    codes = list(codes)
    if not codes:
        raise ValueError("select_languages needs at least one language")
    if len(set(codes)) != len(codes):
        raise ValueError(f"repeated language codes: {codes}")
    rows = jnp.asarray(config.lang_ids(codes))  # raises on unknown codes
    new_params = _map_language_leaves(
        params, config, lambda leaf, axis, _: jnp.take(leaf, rows, axis=axis)
    )
    default = config.default_language if config.default_language in codes else None
    new_config = dataclasses.replace(config, languages=tuple(codes), default_language=default)
    return new_config, new_params
