"""Beyond one device: meshes, sharding rules, sharded steps and sharded checkpoints.

rules.py        `sharding_rules(preset, lang=)`: ordered (logical axis, mesh axes) rules
mesh.py         `make_mesh(data, fsdp, tensor)`: a mesh with `Auto` axis types
shard.py        shardings of params, optimizer and train states, batches; placing them
steps.py        `shard_train_step`, `shard_forward`: steps jitted with in/out shardings
checkpoints.py  orbax params restored straight onto a mesh, any mesh shape
"""

from xmod_jax.parallel.checkpoints import restore_params, save_params
from xmod_jax.parallel.mesh import make_mesh
from xmod_jax.parallel.rules import BATCH_AXES, MESH_AXES, PRESETS, sharding_rules
from xmod_jax.parallel.shard import (
    batch_sharding,
    bytes_per_device,
    params_shardings,
    process_rows,
    shard,
    shard_batch,
    train_state_shardings,
    tree_shardings,
    with_shardings,
)
from xmod_jax.parallel.steps import shard_forward, shard_train_step

__all__ = [
    "BATCH_AXES",
    "MESH_AXES",
    "PRESETS",
    "batch_sharding",
    "bytes_per_device",
    "make_mesh",
    "params_shardings",
    "process_rows",
    "restore_params",
    "save_params",
    "shard",
    "shard_batch",
    "shard_forward",
    "shard_train_step",
    "sharding_rules",
    "train_state_shardings",
    "tree_shardings",
    "with_shardings",
]
