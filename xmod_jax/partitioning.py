"""Logical axis names of every parameter, the contract for sharding and language surgery.

Names: `vocab`, `embed`, `heads`, `kv`, `mlp`, `adapter`, `lang`, `layers`, `labels`; `None`
marks an axis that is never sharded (position and token-type rows). Code that needs the language
axis of a stacked adapter leaf looks up `"lang"` in these names, never a fixed position.
"""

from __future__ import annotations

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
