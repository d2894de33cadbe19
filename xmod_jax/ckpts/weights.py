"""transformers weight files: safetensors (single or sharded) and legacy torch `.bin`.

Reading is numpy only and lazy: a `TensorStore` reads each tensor from disk when it is looked up,
with plain file reads into fresh buffers (no memory map), so loaders convert leaf by leaf and
peak memory stays near one copy of the model. Writing streams tensors one at a time into a
temporary sibling that is renamed over the target (`checkpoint.atomic_path`). torch is imported
solely to read `.bin` files.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import ml_dtypes
import numpy as np
from tqdm.auto import tqdm

from xmod_jax.atomic import atomic_path
from xmod_jax.errors import CheckpointError
from xmod_jax.hub import (
    SAFE_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TORCH_INDEX_NAME,
    TORCH_WEIGHTS_NAME,
)

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


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


class TensorStore(Mapping[str, np.ndarray]):
    """The tensors of a checkpoint by name, each read from disk when it is looked up.

    Converting leaf by leaf from a store keeps peak memory near one copy of the model instead of
    the whole state dict plus the converted params.
    """

    def __init__(self, readers: Mapping[str, Callable[[], np.ndarray]]) -> None:
        self._readers = dict(readers)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._readers[key]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._readers)

    def __len__(self) -> int:
        return len(self._readers)

    def renamed(self, names: Mapping[str, str]) -> TensorStore:
        """A store holding `self[old]` under `new` for each `new: old` of `names`."""
        return TensorStore({new: self._readers[old] for new, old in names.items()})


def read_state_dict(folder: str) -> TensorStore:
    """All tensors of a transformers folder, read lazily (bfloat16 arrives via ml_dtypes)."""
    fmt, files = weight_files(folder)
    opener = open_safetensors if fmt == "safetensors" else read_torch_bin
    readers: dict[str, Callable[[], np.ndarray]] = {}
    for path in files:
        part = opener(path)
        duplicated = sorted(set(part) & set(readers))
        if duplicated:
            raise CheckpointError(f"{path}: tensors also stored in another shard: {duplicated}")
        readers.update(part)
    return TensorStore(readers)


def open_safetensors(path: str) -> dict[str, Callable[[], np.ndarray]]:
    """Validate a safetensors file's header against its size; return a reader per tensor.

    Tensors are read with plain file reads into fresh numpy buffers (no memory map), so memory
    is released tensor by tensor as the loader converts them.
    """

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: corrupt or truncated safetensors file ({why})")

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise corrupt(f"{size} bytes, shorter than the 8-byte header length")
        header_size = int.from_bytes(prefix, "little")
        if header_size > size - 8:
            raise corrupt(f"header of {header_size} bytes exceeds the file")
        try:
            header = json.loads(f.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise corrupt(f"header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    header.pop("__metadata__", None)
    start = 8 + header_size
    readers: dict[str, Callable[[], np.ndarray]] = {}
    for key, info in header.items():
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise corrupt(f"bad entry for {key!r}: {info!r}") from e
        if end - begin != math.prod(shape) * dtype.itemsize or begin < 0:
            raise corrupt(
                f"{key!r}: data_offsets {[begin, end]} do not fit {info['dtype']}{list(shape)}"
            )
        if start + end > size:
            raise corrupt(f"{key!r} ends at byte {start + end} but the file has {size}")
        readers[key] = functools.partial(_read_tensor, path, start + begin, dtype, shape)
    return readers


def _read_tensor(path: str, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(shape, dtype)
    with open(path, "rb") as f:
        f.seek(offset)
        if f.readinto(memoryview(out.reshape(-1).view(np.uint8))) != out.nbytes:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file (short read)")
    return out


def read_torch_bin(path: str) -> dict[str, Callable[[], np.ndarray]]:
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
    return {key: functools.partial(_torch_to_numpy, torch, value) for key, value in state.items()}


def _torch_to_numpy(torch, tensor) -> np.ndarray:
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


# ----------------------------------------------------------------------------------- writing
# (name, dtype, shape, producer): the producer makes the tensor only when it is written.
TensorSpec = tuple[str, np.dtype, tuple[int, ...], Callable[[], np.ndarray]]
_DTYPE_NAMES = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}


def write_safetensors(path: str, specs: Sequence[TensorSpec], progress: bool = False) -> None:
    """Atomically write a safetensors file (metadata format "pt", as transformers expects),
    producing and writing one tensor at a time."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, _ in specs:
        size = math.prod(shape) * np.dtype(dtype).itemsize
        header[name] = {
            "dtype": _DTYPE_NAMES[np.dtype(dtype)],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    bar = tqdm(
        total=offset,
        desc=f"writing {os.path.basename(path)}",
        unit="B",
        unit_scale=True,
        disable=not progress,
    )
    with bar, atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for name, dtype, shape, produce in specs:
            tensor = np.ascontiguousarray(produce())
            assert tensor.dtype == dtype and tensor.shape == tuple(shape), name
            write_array(f, tensor)
            bar.update(tensor.nbytes)


def write_array(f, tensor: np.ndarray) -> None:
    f.write(memoryview(tensor.reshape(-1).view(np.uint8)))
