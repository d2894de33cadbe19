"""Beyond one device: meshes, sharding rules, sharded steps and sharded checkpoints.

rules.py        `sharding_rules(preset, lang=)`: ordered (logical axis, mesh axes) rules
mesh.py         `make_mesh(data, fsdp, tensor)`: a mesh with `Auto` axis types
shard.py        shardings of params, optimizer and train states, batches (`process_rows`: the
                rows each process feeds); placing them
steps.py        `shard_train_step`, `shard_forward`: steps jitted with in/out shardings;
                `MeshPlacement`: `pretrain` on a mesh
checkpoints.py  orbax params saved by every process together, restored straight onto a mesh,
                any mesh shape

Several processes (`jax.distributed.initialize` in each, before any other jax call) need nothing
else: meshes span every process's devices, each process passes the steps its own rows of the
global batch, and every process makes the same calls, saves and restores included
(`tests/test_distributed.py`: two local processes on CPU, gloo collectives, equal one device).
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
from xmod_jax.parallel.steps import MeshPlacement, shard_forward, shard_train_step

__all__ = [
    "BATCH_AXES",
    "MESH_AXES",
    "MeshPlacement",
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
