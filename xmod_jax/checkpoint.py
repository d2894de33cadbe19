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
