"""Running an exported X-MOD (`xmod-jax export`, `xmod_jax.export.export_model`) with jax and
numpy alone.

This file imports nothing from xmod_jax, flax or any other package of this project, so that an
artifact runs where the modelling code is not installed: copy the file beside your service, or
load it by path (`importlib.util.spec_from_file_location`). Imported as
`xmod_jax.export.runtime` it works the same, but the package's `__init__` then imports flax and
the models first. Serialized `jax.export` functions need the `flatbuffers` package.

    model = load("model.xmodexport")
    out = model(input_ids, lang_ids=model.lang_ids(["en_XX", "de_DE"]), attention_mask=mask)
    out["logits"]  # float32 [B, T, V] ("mlm"); "embed": last_hidden_state, sentence_embedding

The exported function is `f(params, input_ids, attention_mask, lang_ids)` with int32 input_ids and
attention_mask [B, T] and lang_ids [B], for any batch B and any length 1 <= T <= `max_length`
(symbolic shapes, one artifact); it returns a dict of float32 arrays. The parameters are an input
stored in the same file, not constants inside the function: a serialized function is a
flatbuffer, which cannot exceed 2 GiB (xmod-base holds 3.2 GiB of float32). Ids are not checked
on the device: an out-of-range token or language id gives NaN for its row, never another
language's adapter.

The file, all integers little-endian:

    MAGIC (8 bytes) | N: header length (uint64) | N bytes of JSON | blobs

Each blob starts at a 64-byte boundary, `offset` bytes after the end of the JSON (padded with
spaces to a boundary). The header's `exported` locates the serialized `jax.export.Exported` and
`params` each parameter array (path, dtype, shape, offset, nbytes); it also names the function,
its inputs and outputs, the languages, the platforms, the length bound, the versions and the
model's config.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import numpy as np

MAGIC = b"XMODJAX\x00"
FORMAT = "xmod-jax export"
FORMAT_VERSION = 1
ALIGN = 64
INPUTS = ("input_ids", "attention_mask", "lang_ids")  # after params, in this order


class ExportedModel:
    """An exported function with its parameters and header; call it like the model.

    header: the JSON header (see the module docstring); exported: the `jax.export.Exported`;
    params: a nested dict of arrays, the function's first argument.
    """

    def __init__(self, header: dict[str, Any], exported: jax.export.Exported, params: Any):
        self.header = header
        self.exported = exported
        self.params = params
        self._placed = False  # params on the device: moved there (not copied) at the first call

    @property
    def function(self) -> str:
        """The exported function, "mlm" or "embed"."""
        return self.header["function"]

    @property
    def languages(self) -> list[str]:
        return list(self.header["languages"])

    @property
    def max_length(self) -> int:
        """The longest T the function accepts: the position table's length."""
        return int(self.header["max_length"])

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(self.exported.platforms)

    def lang_ids(self, codes: str | Iterable[str]) -> np.ndarray:
        """Language codes -> int32 [N] (a code alone -> int32 [])."""
        known = self.languages
        single = isinstance(codes, str)
        ids = []
        for code in [codes] if single else codes:
            if code not in known:
                raise ValueError(f"unknown language {code!r}; known: {', '.join(known)}")
            ids.append(known.index(code))
        return np.asarray(ids[0] if single else ids, np.int32)

    def __call__(
        self, input_ids: Any, lang_ids: Any = None, attention_mask: Any = None
    ) -> dict[str, jax.Array]:
        """input_ids int [B, T]; lang_ids an int, int array [] / [1] / [B], or language codes
        (None: the config's default language); attention_mask [B, T] (None: no masking) ->
        the function's outputs, float32 arrays (`header["outputs"]`)."""
        input_ids = _integers(input_ids, "input_ids")
        if input_ids.ndim != 2 or min(input_ids.shape) < 1:
            raise ValueError(
                f"input_ids must be [B, T] with B, T >= 1, got {list(input_ids.shape)}"
            )
        batch, length = input_ids.shape
        if length > self.max_length:
            raise ValueError(
                f"sequence length {length} exceeds this export's {self.max_length} positions; "
                f"truncate input_ids to at most {self.max_length} tokens"
            )
        if attention_mask is None:
            attention_mask = np.ones((batch, length), np.int32)
        attention_mask = _integers(attention_mask, "attention_mask", bools=True)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the input's shape {list(input_ids.shape)}, "
                f"got {list(attention_mask.shape)}"
            )
        lang_ids = self._lang_ids(lang_ids, batch)
        if not self._placed:
            self.params, self._placed = jax.device_put(self.params), True
        return self._call(self.params, input_ids, attention_mask, lang_ids)

    def _lang_ids(self, lang_ids: Any, batch: int) -> Any:
        if lang_ids is None:
            default = self.header["config"].get("default_language")
            if default is None:
                raise ValueError(
                    f"pass lang_ids: this model has no default language; known: "
                    f"{', '.join(self.languages)}"
                )
            lang_ids = default
        if isinstance(lang_ids, str) or (
            isinstance(lang_ids, Sequence) and lang_ids and isinstance(lang_ids[0], str)
        ):
            lang_ids = self.lang_ids(lang_ids)
        lang_ids = _integers(lang_ids, "lang_ids")
        if lang_ids.shape not in ((), (1,), (batch,)):
            raise ValueError(
                f"lang_ids must have shape [], [1] or [B]=[{batch}] (one language per example), "
                f"got {list(lang_ids.shape)}"
            )
        return jnp.broadcast_to(lang_ids.reshape(-1), (batch,))

    @functools.cached_property
    def _call(self) -> Any:
        return jax.jit(self.exported.call)  # one compilation per input shape

    # ---------------------------------------------------------------------------- the file
    def write(self, file: BinaryIO) -> int:
        """Writes the file format to `file` (binary, positioned at 0) -> bytes written."""
        _check_byte_order("exports")
        leaves = _leaves(self.params)
        blobs: list[Any] = [bytes(self.exported.serialize())]
        entries = []
        for path, leaf in leaves:
            array = np.ascontiguousarray(np.asarray(leaf))
            blobs.append(array)
            entries.append({"path": path, "dtype": array.dtype.name, "shape": list(array.shape)})
        offsets = []
        offset = 0
        for blob in blobs:
            offsets.append(offset)
            offset = _aligned(offset + _nbytes(blob))
        header = {
            **self.header,
            "byte_order": "little",
            "exported": {"offset": offsets[0], "nbytes": len(blobs[0])},
            "params": [
                {**entry, "offset": at, "nbytes": _nbytes(blob)}
                for entry, at, blob in zip(entries, offsets[1:], blobs[1:], strict=True)
            ],
        }
        text = json.dumps(header, indent=1).encode()
        start = _aligned(len(MAGIC) + 8 + len(text))
        text += b" " * (start - len(MAGIC) - 8 - len(text))
        file.write(MAGIC + len(text).to_bytes(8, "little") + text)
        written = start  # counted here: pipes and devices cannot tell
        for at, blob in zip(offsets, blobs, strict=True):
            file.write(b"\0" * (start + at - written))
            file.write(blob if isinstance(blob, bytes) else blob.reshape(-1).view(np.uint8))
            written = start + at + _nbytes(blob)
        return written


def load(path: str | os.PathLike) -> ExportedModel:
    """Reads an `.xmodexport` file; parameters stay on the host until the first call."""
    with open(path, "rb") as f:
        return read(f, name=os.fspath(path))


def read(file: BinaryIO, name: str = "the file") -> ExportedModel:
    """Reads the file format from a binary file positioned at its start."""
    _check_byte_order(name)
    if file.read(len(MAGIC)) != MAGIC:
        raise ValueError(f"{name} is not an xmod-jax export (it does not start with {MAGIC!r})")
    size = int.from_bytes(_read(file, 8, name), "little")
    try:
        header = json.loads(_read(file, size, name))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{name}: the header is not valid JSON ({e})") from None
    if header.get("format") != FORMAT or header.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{name} holds format {header.get('format')!r} version "
            f"{header.get('format_version')}; this runtime reads {FORMAT!r} up to version "
            f"{FORMAT_VERSION}: use a newer xmod_jax/export/runtime.py"
        )
    start = file.tell()

    def blob(entry: dict[str, Any]) -> bytes:
        file.seek(start + entry["offset"])
        return _read(file, entry["nbytes"], name)

    try:
        exported = jax.export.deserialize(bytearray(blob(header["exported"])))
        params: dict[str, Any] = {}
        for entry in header["params"]:
            array = np.frombuffer(blob(entry), jnp.dtype(entry["dtype"])).reshape(entry["shape"])
            *parents, leaf = entry["path"]
            node = params
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = array
    except (KeyError, TypeError) as e:
        raise ValueError(f"{name}: the header is incomplete or malformed ({e!r})") from None
    _check_platform(exported, name)
    return ExportedModel(header, exported, params)


# ----------------------------------------------------------------------------------- helpers
def _check_byte_order(name: str) -> None:
    if sys.byteorder != "little":
        raise ValueError(f"{name}: exports hold little-endian arrays; this machine is big-endian")


def _check_platform(exported: jax.export.Exported, name: str) -> None:
    here = jax.export.default_export_platform()
    if here not in exported.platforms:
        raise ValueError(
            f"{name} was exported for {', '.join(exported.platforms)}; this process runs on "
            f"{here}: export again with that platform (xmod-jax export --platforms)"
        )


def _integers(x: Any, name: str, bools: bool = False) -> Any:
    """An integer (or with `bools`, boolean) array as int32; a jax array stays on its device."""
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.integer) or (bools and x.dtype == bool)):
        raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
    return x.astype(jnp.int32)


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[list[str], Any]]:
    """(key path, array) of every leaf of a nested dict, in sorted key order."""
    found = []
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, dict):
            found += _leaves(value, (*prefix, key))
        else:
            found.append(([*prefix, key], value))
    return found


def _nbytes(blob: Any) -> int:
    return len(blob) if isinstance(blob, bytes) else blob.nbytes


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _read(file: BinaryIO, n: int, name: str) -> bytes:
    data = file.read(n)
    if len(data) != n:
        raise ValueError(f"{name} is truncated: {n} bytes expected at {file.tell() - len(data)}")
    return data
