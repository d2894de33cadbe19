"""Logical axis names of every parameter, the contract for sharding and language surgery.

Names: `vocab`, `embed`, `heads`, `kv`, `mlp`, `adapter`, `lang`, `layers`, `labels`; `None`
marks an axis that is never sharded (position and token-type rows). Code that needs the language
axis of a stacked adapter leaf looks up `"lang"` in these names, never a fixed position.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax

AXIS_NAMES = ("vocab", "embed", "heads", "kv", "mlp", "adapter", "lang", "layers", "labels")


@functools.lru_cache(maxsize=32)
def logical_axes(model: Any) -> dict[str, Any]:
    """A tree matching `model`'s params whose leaves are tuples of logical axis names."""

    def boxed_params(rng: jax.Array) -> Any:
        return model.init({"params": rng}, **model.dummy_inputs())["params"]

    boxed = jax.eval_shape(boxed_params, jax.random.key(0))

    def names(leaf: Any) -> tuple[str | None, ...]:
        if not isinstance(leaf, nn.LogicallyPartitioned):
            raise TypeError(f"parameter without logical axis names: {leaf}")
        unknown = set(leaf.names) - set(AXIS_NAMES) - {None}
        assert not unknown, f"undeclared logical axis names {unknown}"
        return tuple(leaf.names)

    return jax.tree.map(names, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))


@functools.lru_cache(maxsize=8)
def _axes_by_path(config: Any) -> dict[tuple[str, ...], tuple[str | None, ...]]:
    """Axis names of every parameter path any X-MOD module can have, for this config."""
    from xmod_jax.nn.encoder import XmodModel
    from xmod_jax.nn.heads import ARCHITECTURES

    table: dict[tuple[str, ...], tuple[str | None, ...]] = {}
    models = [cls(config) for name, cls in ARCHITECTURES.items() if name != "XmodForCausalLM"]
    if config.is_decoder:
        models.append(ARCHITECTURES["XmodForCausalLM"](config))
    models.append(XmodModel(config, add_pooling_layer=True))
    for model in [*models, *(m.clone(scan_layers=True) for m in models)]:
        flat = jax.tree_util.tree_flatten_with_path(
            logical_axes(model), is_leaf=lambda x: isinstance(x, tuple)
        )[0]
        table.update({tuple(k.key for k in path): names for path, names in flat})
    return table


def params_axes(params: Any, config: Any) -> dict[str, Any]:
    """Logical axis names for a params tree of any X-MOD module (any head, or the bare
    encoder) built from `config`, without knowing which module made it."""
    table = _axes_by_path(dataclasses.replace(config, num_labels=2, id2label=None, label2id=None))

    def names(path: Any, leaf: Any) -> tuple[str | None, ...]:
        key = tuple(k.key for k in path)
        if key not in table:
            raise ValueError(f"{'/'.join(key)} is not an X-MOD parameter")
        return table[key]

    return jax.tree_util.tree_map_with_path(names, params)
