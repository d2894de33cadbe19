"""Sharded params folders: saved from any mesh and any number of processes, restored straight
onto any other mesh.

A params folder is the orbax folder of `convert/hf_to_flax.py` (`config.json` + `params/`),
written whole into a temporary sibling and swapped in (`atomic.atomic_folder`). Orbax writes each
device's shards; `restore_params` gives orbax the target shardings (`jax.ShapeDtypeStruct`s), so
every device reads only its own slices, from whichever mesh shape saved them. Sharded train
states need nothing new: pass `TrainCheckpoints.restore` a `with_shardings(...)` target.

With several processes (`jax.distributed`), every process calls `save_params` with the same
folder, on a file system they all see. Orbax's own atomic rename would cover `params/` only, not
`config.json` beside it, so process 0 makes the temporary folder and tells the others its name,
every process writes its shards into it (orbax syncs them before it finalizes `params/`), and
process 0 writes the config and swaps the folder in. Process 0's errors (an existing folder, a
failed swap) are raised on every process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from xmod_jax.atomic import atomic_folder
from xmod_jax.ckpts.orbax_params import load_orbax_params, orbax_params_metadata, save_orbax_params
from xmod_jax.errors import CheckpointError
from xmod_jax.parallel.rules import Rules
from xmod_jax.parallel.shard import params_shardings, with_shardings

_MESSAGE_BYTES = 8192  # what process 0 tells the others: a folder path or an error


def save_params(folder: str, model: Any, params: Any, *, overwrite: bool = False) -> None:
    """Write `params` (sharded or not) and `model.config` as the orbax folder `folder`.

    With several processes, every one calls this with the same `folder` and its part of the same
    `params`; it returns once the complete folder is in place.
    """
    with contextlib.ExitStack() as stack:  # process 0's temporary folder, until it is swapped in
        tmp = _on_process_0(lambda: stack.enter_context(atomic_folder(folder, overwrite)))
        save_orbax_params(tmp, params)

        def commit() -> str:
            model.config.save_pretrained(tmp, architectures=[model.hf_architecture])
            stack.close()
            return folder

        _on_process_0(commit)


def restore_params(folder: str, model_or_config: Any, mesh: Mesh, rules: Rules) -> Any:
    """The params of the orbax folder `folder`, placed on `mesh` by `rules` as they are read."""
    shapes = orbax_params_metadata(folder)
    target = with_shardings(shapes, params_shardings(shapes, model_or_config, mesh, rules))
    return load_orbax_params(folder, like=target)


def _on_process_0(fn: Callable[[], str]) -> str:
    """Run `fn` on process 0 only; every process returns its result or raises its error (the
    others as a `CheckpointError` quoting it)."""
    if jax.process_count() == 1:
        return fn()
    error, text = None, ""
    if jax.process_index() == 0:
        try:
            text = fn()
        except Exception as e:  # told to every process, then raised here as it is
            error, text = e, f"{type(e).__name__}: {e}"
    text = _from_process_0(("!" if error is not None else "") + text)
    if error is not None:
        raise error
    if text.startswith("!"):
        raise CheckpointError(f"saving sharded params failed on process 0: {text[1:]}")
    return text


def _from_process_0(text: str) -> str:
    """Process 0's `text` (truncated to `_MESSAGE_BYTES`), on every process."""
    data = text.encode()[:_MESSAGE_BYTES]
    message = np.zeros(_MESSAGE_BYTES, np.uint8)
    message[: len(data)] = np.frombuffer(data, np.uint8)
    size = np.array(len(data), np.int32)
    size, message = multihost_utils.broadcast_one_to_all((size, message))
    return bytes(np.asarray(message)[: int(size)]).decode(errors="replace")
