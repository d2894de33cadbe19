"""Checkpoint folders: atomic writes and the orbax layout (every orbax call lives here).

Two layouts load with `from_pretrained`: a transformers folder (`config.json` + safetensors or
`pytorch_model.bin`, see `tensor_files.py`) and an orbax folder (`config.json` + `params/`, an
orbax PyTree checkpoint of our params). Writers fill a temporary sibling (`.NAME.tmp-*`), sync
it and rename it into place, so a crash or kill mid-write never leaves a folder or file that
loads; loaders only ever look at the real name, so leftover temporaries are ignored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any


# ----------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary sibling of `path`; on success fsync it and rename it to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


# ------------------------------------------------------------------------------------- folders
@contextlib.contextmanager
def atomic_folder(path: str, overwrite: bool = False) -> Iterator[str]:
    """Yield an empty temporary sibling of folder `path`; on success sync it and move it to `path`.

    An existing `path` is refused unless `overwrite`; it is then renamed aside, replaced, and
    removed, so at no point does a half-written folder sit under `path`.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        _fsync_tree(tmp)
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.replace(path, os.path.join(old, name))
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
        _fsync_dir(parent)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(folder: str) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(root)


# --------------------------------------------------------------------------------------- orbax
ORBAX_PARAMS = "params"


def is_orbax_folder(folder: str) -> bool:
    return os.path.isdir(os.path.join(folder, ORBAX_PARAMS))


def _checkpointer():
    """A synchronous orbax checkpointer that moves at most ~1 GB at a time, which bounds the
    host memory a large save or restore needs beyond the params themselves."""
    import orbax.checkpoint as ocp

    handler = ocp.StandardCheckpointHandler(save_concurrent_gb=1, restore_concurrent_gb=1)
    return ocp.Checkpointer(handler)


def save_orbax_params(folder: str, params: Any) -> None:
    """Write `params` as an orbax checkpoint in `folder/params` (returns once it is on disk)."""
    import orbax.checkpoint as ocp

    with _checkpointer() as checkpointer:
        path = os.path.join(os.path.abspath(folder), ORBAX_PARAMS)
        checkpointer.save(path, args=ocp.args.StandardSave(params))


def load_orbax_params(folder: str) -> Any:
    """The params tree of `folder/params`, as saved (arrays on the default device)."""
    import orbax.checkpoint as ocp

    from xmod_jax.errors import CheckpointError

    path = os.path.join(os.path.abspath(folder), ORBAX_PARAMS)
    try:
        with _checkpointer() as checkpointer:
            return checkpointer.restore(path, args=ocp.args.StandardRestore())
    except Exception as e:  # orbax and tensorstore raise many types
        raise CheckpointError(f"{path}: unreadable orbax checkpoint ({e})") from e


def orbax_params_metadata(folder: str) -> Any:
    """Shapes and dtypes of `folder/params` (`jax.ShapeDtypeStruct` leaves), read from the
    checkpoint's metadata without loading any array."""
    import jax
    import orbax.checkpoint as ocp

    path = os.path.join(os.path.abspath(folder), ORBAX_PARAMS)
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype),
        tree,
        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
    )


# ------------------------------------------------------------------------ train-state checkpoints
class TrainCheckpoints:
    """Orbax checkpoints of a `TrainState` in `directory/<step>`.

    Keeps the newest `keep_last` and the `keep_best` best by `metric` (`mode` "max" or "min")
    through orbax's preservation policies. Saves are asynchronous by default: training goes on
    while the arrays are written; call `wait_until_finished()` (or use the object as a context
    manager) before exiting. Orbax writes each step into a temporary directory and renames it
    when complete, so an interrupted save never replaces the last good checkpoint.
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
        import orbax.checkpoint as ocp

        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        policies = ocp.checkpoint_managers
        policy = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=keep_last),
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics[metric],
                    reverse=mode == "min",
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=lambda metrics: metrics[metric],  # also makes orbax store the metrics
            best_mode=mode,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.metric = metric
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def save(self, state: Any, metrics: dict[str, float] | None = None) -> bool:
        """Start saving `state` under its step (with `metrics` for the best-N policy)."""
        import orbax.checkpoint as ocp

        if metrics is not None and self.metric not in metrics:
            raise ValueError(f"metrics lack {self.metric!r}, which ranks checkpoints: {metrics}")
        step = int(state.step)
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        return self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

    def restore(self, like: Any, step: int | None = None) -> Any:
        """The state saved at `step` (default: the latest), shaped like `like` (a state or its
        `jax.eval_shape`)."""
        import jax
        import orbax.checkpoint as ocp

        from xmod_jax.errors import CheckpointError

        self.wait_until_finished()
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no train-state checkpoint in {self._manager.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
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
