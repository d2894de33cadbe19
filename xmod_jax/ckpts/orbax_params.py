"""Orbax params folders: `config.json` + `params/`, an orbax PyTree checkpoint of our params.

Written by `convert/hf_to_flax.py` (`xmod_jax.ckpts.folders`) and loaded by `from_pretrained`;
every orbax call for params folders lives here.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from xmod_jax.errors import CheckpointError

ORBAX_PARAMS = "params"


def is_orbax_folder(folder: str) -> bool:
    return os.path.isdir(os.path.join(folder, ORBAX_PARAMS))


def _checkpointer():
    """A synchronous orbax checkpointer that moves at most ~1 GB at a time, which bounds the
    host memory a large save or restore needs beyond the params themselves."""
    handler = ocp.StandardCheckpointHandler(save_concurrent_gb=1, restore_concurrent_gb=1)
    return ocp.Checkpointer(handler)


def save_orbax_params(folder: str, params: Any) -> None:
    """Write `params` as an orbax checkpoint in `folder/params` (returns once it is on disk)."""
    with _checkpointer() as checkpointer:
        path = os.path.join(os.path.abspath(folder), ORBAX_PARAMS)
        checkpointer.save(path, args=ocp.args.StandardSave(params))


def load_orbax_params(folder: str, like: Any = None) -> Any:
    """The params tree of `folder/params`, as saved (arrays on this process's first device).

    like: a tree of `jax.ShapeDtypeStruct`s with shardings; each device then reads only its own
    shards, whatever mesh the params were saved from. Without it, every leaf is read whole onto
    this process's first device, whichever devices saved it (orbax alone would refuse params
    saved on another topology, such as a mesh of 8 devices or of several processes).
    """
    path = os.path.join(os.path.abspath(folder), ORBAX_PARAMS)
    try:
        if like is None:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            like = jax.tree.map(
                lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                orbax_params_metadata(folder),
            )
        with _checkpointer() as checkpointer:
            return checkpointer.restore(path, args=ocp.args.StandardRestore(like))
    except Exception as e:  # orbax and tensorstore raise many types
        raise CheckpointError(f"{path}: unreadable orbax checkpoint ({e})") from e


def orbax_params_metadata(folder: str) -> Any:
    """Shapes and dtypes of `folder/params` (`jax.ShapeDtypeStruct` leaves), read from the
    checkpoint's metadata without loading any array."""
    path = os.path.join(os.path.abspath(folder), ORBAX_PARAMS)
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype),
        tree,
        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
    )
