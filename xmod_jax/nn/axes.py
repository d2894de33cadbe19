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

from xmod_jax.nn.encoder import XmodModel
from xmod_jax.nn.heads import HEAD_CLASSES
from xmod_jax.nn.layers import AXIS_NAMES
from xmod_jax.nn.layouts import is_scanned


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


def params_axes(params: Any, model_or_config: Any) -> dict[str, Any]:
    """Logical axis names for the params of any X-MOD module (any head, or the bare encoder).

    Pass the module, or its config: the module is then recognised from the parameter names
    (the head's `head_params`, the pooler, the scanned layout), which traces one module only.
    """
    if isinstance(model_or_config, nn.Module):
        candidates = [model_or_config]
    else:
        candidates = _modules_for(params, model_or_config)
    paths = {path for path, _ in _flat(params)}
    for model in candidates:
        axes = logical_axes(model)
        if {path for path, _ in _flat(axes)} == paths:
            return axes
    known = {path for path, _ in _flat(logical_axes(candidates[0]))}
    unknown = sorted(paths - known) or sorted(known - paths)
    raise ValueError(
        f"{'/'.join(unknown[0])} is not an X-MOD parameter of {type(candidates[0]).__name__} "
        f"(params do not fit any X-MOD module built from this config)"
    )


def _modules_for(params: Any, config: Any) -> list[Any]:
    """The modules whose parameter names could be those of `params`, most likely first."""
    # The label count and names change no axis name; QA needs exactly two labels.
    config = dataclasses.replace(config, num_labels=2, id2label=None, label2id=None)
    if "roberta" in params:
        head = set(params) - {"roberta"}
        pooled = "pooler" in params["roberta"]
        classes = [
            c for c in HEAD_CLASSES if set(c.head_params) == head and c.uses_pooler == pooled
        ]
        fits = [
            c for c in classes if all(getattr(config, k) == v for k, v in c.config_defaults.items())
        ]
        models = [c(config) for c in fits]
    else:
        models = [XmodModel(config, add_pooling_layer="pooler" in params)]
    if not models:
        raise ValueError(f"params with top-level keys {sorted(params)} fit no X-MOD module")
    return [m.clone(scan_layers=is_scanned(params)) for m in models]


def _flat(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))[0]
    return [(tuple(k.key for k in path), leaf) for path, leaf in leaves]
