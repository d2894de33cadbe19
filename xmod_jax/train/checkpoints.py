"""`TrainCheckpoints`: orbax checkpoints of a whole `TrainState`, the latest and the best."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from xmod_jax.errors import CheckpointError


class TrainCheckpoints:
    """Orbax checkpoints of a `TrainState` in `directory/<step>`.

    Keeps the newest `keep_last` and the `keep_best` best by `metric` (`mode` "max" or "min")
    through orbax's preservation policies (`keep_best=0`: the newest only, no metric). Saves are
    asynchronous by default: training goes on while the arrays are written; call
    `wait_until_finished()` (or use the object as a context manager) before exiting. Orbax writes
    each step into a temporary directory and renames it when complete, so an interrupted save
    never replaces the last good checkpoint. With several processes (`jax.distributed`), every
    one makes the same calls with the same directory, on a file system all of them see; each
    writes its own shards.
    """

    def __init__(
        self,
        directory: str,
        *,
        keep_last: int = 2,
        keep_best: int = 1,
        metric: str = "accuracy",
        mode: str = "max",
        async_save: bool = True,
    ) -> None:

        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        policies = ocp.checkpoint_managers
        keep: list = [policies.LatestN(n=keep_last)]
        ranking = {}
        if keep_best:
            keep.append(
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics[metric],
                    reverse=mode == "min",
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
            # best_fn also makes orbax store the metrics
            ranking = {"best_fn": lambda metrics: metrics[metric], "best_mode": mode}
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            enable_async_checkpointing=async_save,
            create=True,
            **ranking,
        )
        self.metric = metric
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def save(self, state: Any, metrics: dict[str, float] | None = None) -> bool:
        """Start saving `state` under its step (with `metrics` for the best-N policy)."""
        if metrics is not None and self.metric not in metrics:
            raise ValueError(f"metrics lack {self.metric!r}, which ranks checkpoints: {metrics}")
        step = int(state.step)
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        return self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

    def restore(self, like: Any, step: int | None = None) -> Any:
        """The state saved at `step` (default: the latest), shaped like `like` (a state or its
        `jax.eval_shape`), placed like its leaves: by their shardings (a sharded state, or
        `xmod_jax.parallel.with_shardings`), else on this process's first device, whichever
        devices or processes saved it."""
        self.wait_until_finished()
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no train-state checkpoint in {self._manager.directory}")
        abstract = jax.tree.map(_abstract, like)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the best `metric`."""
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> TrainCheckpoints:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wait_until_finished()
        self.close()


def _abstract(leaf: Any) -> Any:
    """`leaf` as orbax's restore target; without a sharding, on this process's first device
    (orbax would otherwise use the saving topology, and refuse to restore onto another)."""
    abstract = ocp.utils.to_shape_dtype_struct(leaf)
    if isinstance(abstract, jax.ShapeDtypeStruct) and abstract.sharding is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.ShapeDtypeStruct(abstract.shape, abstract.dtype, sharding=device)
    return abstract
