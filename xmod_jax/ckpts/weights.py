"""transformers weight files: safetensors (single or sharded) and legacy torch `.bin`.

safetensors files are read with the `safetensors` package (numpy framework; BF16 arrives as
`ml_dtypes.bfloat16`), which checks each header against its file. Reading is lazy: a
`TensorStore` reads a tensor when it is looked up, so loaders convert leaf by leaf and peak memory
stays near one copy of the model. Writing is our own and streams tensors one at a time into a
temporary sibling renamed over the target (`atomic_path`): the package's writer needs every
tensor in memory at once. torch is imported solely to read `.bin` files.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

# Imported before safetensors reads anything: it registers "bfloat16" with numpy, the name
# safetensors' numpy reader asks numpy for.
import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from xmod_jax.atomic import atomic_path
from xmod_jax.errors import CheckpointError
from xmod_jax.hub import (
    SAFE_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TORCH_INDEX_NAME,
    TORCH_WEIGHTS_NAME,
)

# What safetensors' numpy reader can return, so what we read and write. It has no numpy type for
# the F8/F6/F4 codes (it asks numpy, not ml_dtypes, for them) and complex weights have no use here.
_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
# Bytes one `safe_open` handle serves before it closes (see `_SafetensorsFile`). Measured loading
# a full-size xmod-base (3.4 GB, 4090 tensors, ~4 ms per header parse): 32 MB adds ~0.3 s of
# reopening and ~1% to peak RSS; 256 MB adds 6% to peak RSS, a single handle 90%.
HANDLE_BYTES = 32 * 2**20


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

    def __contains__(self, key: object) -> bool:
        return key in self._readers  # Mapping's default would read the tensor to find out

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


def open_safetensors(
    path: str, handle_bytes: int = HANDLE_BYTES
) -> dict[str, Callable[[], np.ndarray]]:
    """Check a safetensors file now (header, sizes, dtypes); return a reader per tensor."""
    file = _SafetensorsFile(path, handle_bytes)
    return {key: functools.partial(file.read, key) for key in file.names}


class _SafetensorsFile:
    """One safetensors file read through `safe_open` handles that each serve about
    `handle_bytes` of tensors, then close.

    A handle memory-maps the whole file and the pages it has copied tensors from stay resident
    while it is open, so one handle for the whole load would hold a second copy of the model;
    one per tensor would re-parse a header of thousands of entries per tensor. One per group
    bounds both. Tensors come back as fresh arrays that outlive their handle.
    """

    def __init__(self, path: str, handle_bytes: int) -> None:
        self.path = path
        self.handle_bytes = handle_bytes
        self._lock = threading.Lock()  # a handle must not close under a read in another thread
        self._handle = self._open()
        self._served = 0
        with self._guard():
            dtypes = {k: self._handle.get_slice(k).get_dtype() for k in self._handle.keys()}
        self.names = list(dtypes)
        unreadable = sorted(f"{k} ({d})" for k, d in dtypes.items() if d not in _SAFETENSORS_DTYPES)
        if unreadable:
            self._close()
            raise CheckpointError(
                f"{path}: tensors of a dtype safetensors' numpy reader cannot return: "
                f"{unreadable[:5]}{' ...' if len(unreadable) > 5 else ''}; supported: "
                f"{', '.join(_SAFETENSORS_DTYPES)} (convert the file to one of those)"
            )

    def read(self, key: str) -> np.ndarray:
        with self._lock:
            if self._handle is None:
                self._handle, self._served = self._open(), 0
            with self._guard():
                tensor = self._handle.get_tensor(key)
            self._served += tensor.nbytes
            if self._served >= self.handle_bytes:
                self._close()
        return tensor

    def _close(self) -> None:
        self._handle.__exit__(None, None, None)  # unmaps the file now, whoever else holds it
        self._handle = None

    def _open(self):
        with self._guard():
            return safe_open(self.path, framework="numpy")

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn the package's errors into a `CheckpointError` naming the file and the reason."""
        try:
            yield
        except SafetensorError as e:
            raise CheckpointError(
                f"{self.path}: corrupt or truncated safetensors file ({e})"
            ) from e
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read ({e})") from e


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
    producing and writing one tensor at a time; any dtype of `_SAFETENSORS_DTYPES`."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, _ in specs:
        code = _DTYPE_NAMES.get(np.dtype(dtype))
        if code is None:
            raise ValueError(
                f"{path}: cannot store {name!r} of dtype {np.dtype(dtype)} in safetensors; "
                f"supported: {', '.join(str(np.dtype(d)) for d in _SAFETENSORS_DTYPES.values())}"
            )
        size = math.prod(shape) * np.dtype(dtype).itemsize
        header[name] = {
            "dtype": code,
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
            tensor = np.asarray(produce(), order="C")  # ascontiguousarray would make 0-d 1-d
            assert tensor.dtype == dtype and tensor.shape == tuple(shape), name
            write_array(f, tensor)
            bar.update(tensor.nbytes)


def write_array(f, tensor: np.ndarray) -> None:
    f.write(memoryview(tensor.reshape(-1).view(np.uint8)))
