"""Sharded params folders: saved from any mesh, restored straight onto any other.

A params folder is the orbax folder of `convert/hf_to_flax.py` (`config.json` + `params/`),
written whole into a temporary sibling and swapped in (`atomic.atomic_folder`). Orbax writes each
device's shards; `restore_params` gives orbax the target shardings (`jax.ShapeDtypeStruct`s), so
every device reads only its own slices, from whichever mesh shape saved them. Sharded train
states need nothing new: pass `TrainCheckpoints.restore` a `with_shardings(...)` target.
"""

from __future__ import annotations

from typing import Any

from jax.sharding import Mesh

from xmod_jax.atomic import atomic_folder
from xmod_jax.ckpts.orbax_params import load_orbax_params, orbax_params_metadata, save_orbax_params
from xmod_jax.parallel.rules import Rules
from xmod_jax.parallel.shard import params_shardings, with_shardings


def save_params(folder: str, model: Any, params: Any, *, overwrite: bool = False) -> None:
    """Write `params` (sharded or not) and `model.config` as the orbax folder `folder`."""
    with atomic_folder(folder, overwrite) as tmp:
        save_orbax_params(tmp, params)
        model.config.save_pretrained(tmp, architectures=[model.hf_architecture])


def restore_params(folder: str, model_or_config: Any, mesh: Mesh, rules: Rules) -> Any:
    """The params of the orbax folder `folder`, placed on `mesh` by `rules` as they are read."""
    shapes = orbax_params_metadata(folder)
    target = with_shardings(shapes, params_shardings(shapes, model_or_config, mesh, rules))
    return load_orbax_params(folder, like=target)
