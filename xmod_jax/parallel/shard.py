"""Shardings of params, optimizer state, train states and batches on a mesh, and placing them.

Every parameter's sharding comes from its logical axis names (`xmod_jax.nn.axes`) and the rules
(`xmod_jax.parallel.rules`). Optimizer-state leaves that mirror a parameter (AdamW moments,
accumulators) take that parameter's sharding; counts and other leaves are replicated. Batches
are split along their leading (batch) axis over `BATCH_AXES`. Every axis is checked to divide
evenly before anything is placed, and an error names the leaf, the axis and the sizes.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from xmod_jax.nn.axes import params_axes
from xmod_jax.parallel.rules import BATCH_AXES, Rules, as_tuple

Tree = Any


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def params_shardings(params: Tree, model_or_config: Any, mesh: Mesh, rules: Rules) -> Tree:
    """A `NamedSharding` per leaf of `params` (arrays or `jax.ShapeDtypeStruct`s).

    Raises `ValueError` naming the leaf, its logical axis and the sizes where a split is uneven.
    """
    check_mesh(mesh)
    axes = params_axes(params, model_or_config)

    def sharding(path: Any, leaf: Any, names: tuple[str | None, ...]) -> NamedSharding:
        spec = nn.logical_to_mesh_axes(names, rules)
        for size, name, mesh_axes in zip(leaf.shape, names, spec, strict=True):
            _check_split(_path(path), f"axis {name}", size, mesh, mesh_axes)
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(sharding, params, axes)


def tree_shardings(tree: Tree, params: Tree, param_shardings: Tree, mesh: Mesh) -> Tree:
    """Shardings for a tree that mirrors params in places, such as an optax state.

    A leaf whose key path ends with a parameter's path, with that parameter's shape, gets the
    parameter's sharding (`...mu['roberta']['encoder']...['kernel']`); every other leaf
    (step counts, scalars) is replicated.
    """
    by_path = {
        _keys(path): (leaf.shape, sharding)
        for (path, leaf), sharding in zip(
            jax.tree_util.tree_flatten_with_path(params)[0],
            jax.tree.leaves(param_shardings),
            strict=True,
        )
    }

    def sharding(path: Any, leaf: Any) -> NamedSharding:
        keys = _keys(path)
        for start in range(len(keys)):
            shape, found = by_path.get(keys[start:], (None, None))
            if found is not None and shape == getattr(leaf, "shape", None):
                return found
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(sharding, tree)


def train_state_shardings(state: Any, model_or_config: Any, mesh: Mesh, rules: Rules) -> Any:
    """A `TrainState` of shardings for `state` (a state or its `jax.eval_shape`): params by the
    rules, optimizer state like its params, step and rng replicated."""
    params = params_shardings(state.params, model_or_config, mesh, rules)
    return state.replace(
        params=params,
        opt_state=tree_shardings(state.opt_state, state.params, params, mesh),
        step=replicated(mesh),
        rng=replicated(mesh),
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) axis over `BATCH_AXES`, the other axes replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def check_batch(batch: dict[str, Any], mesh: Mesh) -> None:
    """Raise unless every batch entry's leading axis splits evenly over `BATCH_AXES` (host
    arrays hold this process's rows only: see `process_rows`)."""
    for key, value in batch.items():
        shape = getattr(value, "shape", ())
        if not shape:
            raise ValueError(f"batch[{key!r}] is a scalar; every batch entry needs a batch axis")
        where = f"batch[{key!r}]"
        rows = shape[0] if isinstance(value, jax.Array) else _global_rows(where, shape[0], mesh)
        _check_split(where, "batch axis", rows, mesh, BATCH_AXES)


def process_rows(mesh: Mesh, rows: int) -> np.ndarray:
    """The rows of a global batch of `rows` rows that this process passes to `shard_batch`:
    those its devices hold, in order. int64 [rows / P] where P processes split the batch
    (processes that hold the same rows, batch replicas, get the same indices); with one
    process, every row."""
    _check_split("global batch", "batch axis", rows, mesh, BATCH_AXES)
    held = batch_sharding(mesh).addressable_devices_indices_map((rows,))
    blocks = sorted({index[0].indices(rows)[:2] for index in held.values()})
    return np.concatenate([np.arange(start, stop) for start, stop in blocks])


def shard_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Place a batch on the mesh, split along the batch axis. Host arrays are this process's
    rows (`process_rows`; with one process, the whole batch), placed by
    `jax.make_array_from_process_local_data`; device arrays are global already and only moved."""
    check_batch(batch, mesh)
    sharding = batch_sharding(mesh)

    def place(key: str, value: Any) -> jax.Array:
        if isinstance(value, jax.Array):
            return jax.device_put(value, sharding)
        value = np.asarray(value)
        shape = (_global_rows(f"batch[{key!r}]", len(value), mesh), *value.shape[1:])
        return jax.make_array_from_process_local_data(sharding, value, shape)

    return {key: place(key, value) for key, value in batch.items()}


def _global_rows(where: str, local_rows: int, mesh: Mesh) -> int:
    """The global batch size when this process passes `local_rows` host rows: the batch axis
    splits into blocks over `BATCH_AXES`, and this process's devices hold some of them."""
    if any(axis not in mesh.shape for axis in BATCH_AXES):
        return local_rows  # the caller's check names the missing axes
    blocks = math.prod(mesh.shape[axis] for axis in BATCH_AXES)
    held = len(process_rows(mesh, blocks))
    if held == blocks:  # one process, or processes that are batch replicas
        return local_rows
    if local_rows % held:
        raise ValueError(
            f"{where}: this process's {local_rows} rows cannot split {held} ways (its devices "
            f"hold {held} of the {blocks} blocks over mesh axes {BATCH_AXES}); pass "
            "the rows `process_rows` names"
        )
    return local_rows // held * blocks


def shard(tree: Tree, shardings: Tree) -> Tree:
    """Place `tree` (params, an optimizer state, a `TrainState`) by a matching sharding tree."""
    return jax.device_put(tree, shardings)


def with_shardings(tree: Tree, shardings: Tree) -> Tree:
    """`jax.ShapeDtypeStruct`s of `tree`'s leaves carrying `shardings`: the target that tells
    orbax where each restored shard goes."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def bytes_per_device(tree: Tree) -> dict[int, int]:
    """Bytes of `tree`'s arrays held by each device (by device id), counted from the shards."""
    held: collections.Counter = collections.Counter()
    for leaf in jax.tree.leaves(tree):
        for shard_ in leaf.addressable_shards:
            held[shard_.device.id] += shard_.data.nbytes
    return dict(sorted(held.items()))


def check_mesh(mesh: Mesh) -> None:
    """Raise unless every mesh axis is `Auto` (see `xmod_jax.parallel.mesh`)."""
    kinds = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
    other = {name: kind for name, kind in kinds.items() if kind != AxisType.Auto}
    if other:
        raise ValueError(
            f"mesh axes {other} are not Auto; build the mesh with xmod_jax.parallel.make_mesh "
            f"or pass axis_types=(AxisType.Auto,) * {len(kinds)} to jax.make_mesh"
        )


def _check_split(where: str, what: str, size: int, mesh: Mesh, mesh_axes: Any) -> None:
    names = as_tuple(mesh_axes)
    missing = [a for a in names if a not in mesh.shape]
    if missing:
        raise ValueError(f"{where}: {what} maps to mesh axes {missing} that the mesh lacks")
    ways = math.prod(mesh.shape[a] for a in names)
    if size % ways:
        raise ValueError(
            f"{where}: {what} of size {size} cannot split {ways} ways over mesh axes {names} "
            f"(choose a mesh whose {' x '.join(names)} divides {size}, or another preset)"
        )


def _keys(path: Any) -> tuple[str, ...]:
    return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def _path(path: Any) -> str:
    return "/".join(_keys(path))
