"""Train, eval and forward steps jitted over a mesh: the same function on one device or many.

The wrappers take the library's steps as they are (`make_train_step`, `make_pretrain_step`,
`make_eval_step`, or any `(params, batch) -> outputs`) and jit them with input and output
shardings: the state or params where the rules put them, the batch split along its batch axis.
`MeshPlacement` hands the train step and its state to a training loop (`pretrain`).
They trace under the mesh and the rules, so the constraints in the modules take effect
(`nn.constraints`: the residual stream split by batch, looked-up tables whole); the compiler
propagates the rest. Results equal the single-device ones to float rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from xmod_jax.nn.constraints import activation_rules
from xmod_jax.parallel.rules import Rules
from xmod_jax.parallel.shard import (
    batch_sharding,
    process_rows,
    replicated,
    shard,
    shard_batch,
    train_state_shardings,
)

Batch = dict[str, Any]


def shard_train_step(
    train_step: Callable[[Any, Batch], tuple[Any, dict[str, jax.Array]]],
    state_shardings: Any,
    mesh: Mesh,
    rules: Rules,
) -> Callable[[Any, Batch], tuple[Any, dict[str, jax.Array]]]:
    """`train_step(state, batch) -> (state, metrics)` jitted on `mesh`, the state donated.

    state_shardings: `train_state_shardings(...)`; the state must already be placed by them
    (`shard(state, state_shardings)`). Batches go through `shard_batch` (host arrays: this
    process's rows); metrics come out replicated.
    """
    jitted = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding(mesh)),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=0,
    )

    def step(state: Any, batch: Batch) -> tuple[Any, dict[str, jax.Array]]:
        batch = shard_batch(batch, mesh)
        with _mesh_and_rules(mesh, rules):
            return jitted(state, batch)

    return step


def shard_forward(
    fn: Callable[[Any, Batch], Any], params_shardings: Any, mesh: Mesh, rules: Rules
) -> Callable[[Any, Batch], Any]:
    """`fn(params, batch) -> outputs` (an eval step, or `model.apply` around a batch) jitted on
    `mesh`; the compiler chooses the outputs' shardings."""
    jitted = jax.jit(fn, in_shardings=(params_shardings, batch_sharding(mesh)))

    def forward(params: Any, batch: Batch) -> Any:
        batch = shard_batch(batch, mesh)
        with _mesh_and_rules(mesh, rules):
            return jitted(params, batch)

    return forward


class MeshPlacement:
    """A training loop on a mesh: `pretrain(..., placement=MeshPlacement(model, mesh, rules))`.

    The train state is placed by the rules (`train_state_shardings`), the step jitted with
    `shard_train_step`, and each process feeds its own rows of every global batch
    (`process_rows`); checkpoints then save and restore sharded.
    """

    def __init__(self, model_or_config: Any, mesh: Mesh, rules: Rules) -> None:
        self.model_or_config, self.mesh, self.rules = model_or_config, mesh, rules

    def distribute(self, state: Any, step_fn: Callable) -> tuple[Any, Callable]:
        shardings = train_state_shardings(state, self.model_or_config, self.mesh, self.rules)
        return shard(state, shardings), shard_train_step(step_fn, shardings, self.mesh, self.rules)

    def local_rows(self, batch: Batch) -> Batch:
        rows = process_rows(self.mesh, len(next(iter(batch.values()))))
        return {key: np.asarray(value)[rows] for key, value in batch.items()}


@contextlib.contextmanager
def _mesh_and_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """`mesh` as the current mesh and `rules` for the modules' sharding constraints, for
    tracing (jax allows `set_mesh` only outside `jit`, so the calls run inside it)."""
    with jax.set_mesh(mesh), activation_rules(rules):
        yield
