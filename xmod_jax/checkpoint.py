"""Reading and writing checkpoint files: safetensors (single or sharded), legacy torch `.bin`.

Reading is numpy only; torch is imported solely for `.bin` files. Writes go to a temporary
sibling that is synced and then renamed over the target, so a crash mid-write never leaves a
half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping

import numpy as np

from xmod_jax.errors import CheckpointError

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
TORCH_INDEX_NAME = "pytorch_model.bin.index.json"


# ----------------------------------------------------------------------------------- reading
def weight_files(folder: str) -> tuple[str, list[str]]:
    """Which weights a transformers folder holds: (format, files), safetensors preferred."""
    for name, fmt in (
        (SAFE_WEIGHTS_NAME, "safetensors"),
        (SAFE_INDEX_NAME, "safetensors"),
        (TORCH_WEIGHTS_NAME, "torch"),
        (TORCH_INDEX_NAME, "torch"),
    ):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return fmt, _shards(path) if name.endswith(".index.json") else [path]
    raise CheckpointError(
        f"no weights in {folder!r}: expected {SAFE_WEIGHTS_NAME}, {SAFE_INDEX_NAME} or "
        f"{TORCH_WEIGHTS_NAME}"
    )


def _shards(index_path: str) -> list[str]:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: not a valid shard index ({e!r})") from e
    folder = os.path.dirname(index_path)
    files = sorted(set(weight_map.values()))
    absent = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if absent:
        raise CheckpointError(f"{index_path}: shard files missing: {absent}")
    return [os.path.join(folder, f) for f in files]


def read_state_dict(folder: str) -> dict[str, np.ndarray]:
    """All tensors of a transformers folder as numpy arrays (bfloat16 via ml_dtypes)."""
    fmt, files = weight_files(folder)
    reader = read_safetensors if fmt == "safetensors" else read_torch_bin
    state: dict[str, np.ndarray] = {}
    for path in files:
        part = reader(path)
        duplicated = sorted(set(part) & set(state))
        if duplicated:
            raise CheckpointError(f"{path}: tensors also stored in another shard: {duplicated}")
        state.update(part)
    return state


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as e:  # the Rust reader raises its own error types
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from e


def read_torch_bin(path: str) -> dict[str, np.ndarray]:
    """A legacy `pytorch_model.bin` (needs torch; loaded with weights_only=True)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(
            f"{path} is a torch pickle: install torch to read it, or convert it to safetensors"
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: corrupt or truncated torch checkpoint ({e})") from e
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {key: _torch_to_numpy(torch, value) for key, value in state.items()}


def _torch_to_numpy(torch, tensor) -> np.ndarray:
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


# ----------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary sibling of `path`; on success fsync it and rename it to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray]) -> None:
    """Atomically write a safetensors file transformers accepts (metadata format "pt")."""
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file(dict(tensors), tmp, metadata={"format": "pt"})
