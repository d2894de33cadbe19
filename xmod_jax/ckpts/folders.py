"""Checkpoint conversion between transformers folders and orbax folders (the `convert/` CLIs).

Both directions stream: loading converts leaf by leaf into device arrays, orbax writes those
arrays, and the safetensors writer produces one tensor at a time, so peak memory stays near one
copy of the model. Each conversion writes into a temporary sibling folder that is synced and
swapped in for the destination (`atomic.atomic_folder`): a conversion killed at any instant
leaves the previous destination (or none) or the complete new one, never a mix.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from xmod_jax.atomic import atomic_folder, readable_folder
from xmod_jax.ckpts.loading import write_pretrained
from xmod_jax.ckpts.orbax_params import orbax_params_metadata, save_orbax_params
from xmod_jax.config import XmodConfig
from xmod_jax.errors import CheckpointError
from xmod_jax.hub import resolve_folder
from xmod_jax.nn.heads import ARCHITECTURES, class_for
from xmod_jax.nn.module import Params, XmodPreTrainedModule


def model_class(folder: str, head: str | None = None) -> type[XmodPreTrainedModule]:
    """`head` by name, else the first X-MOD class in the folder config's `architectures`, else
    `XmodModel`."""
    if head is None:
        return class_for(XmodConfig.from_pretrained(folder).architectures)
    if head not in ARCHITECTURES:
        raise ValueError(f"unknown head {head!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[head]


def parameter_summary(params: Params) -> dict[str, Any]:
    leaves = jax.tree.leaves(params)
    return {
        "parameters": sum(int(np.prod(x.shape)) for x in leaves),
        "bytes": sum(int(x.nbytes) for x in leaves),
        "dtypes": sorted({str(x.dtype) for x in leaves}),
    }


def hf_to_flax(
    src: str,
    dst: str,
    *,
    dtype: Any = None,
    head: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """transformers folder (or hub name) -> orbax folder: `dst/config.json` + `dst/params/`.

    dtype: storage dtype of the written params (default float32); head: class to load as.
    """
    src = resolve_folder(readable_folder(src))
    cls = model_class(src, head)
    model, params = cls.from_pretrained(src, param_dtype=dtype or "float32", progress=progress)
    with atomic_folder(dst, overwrite) as tmp:
        save_orbax_params(tmp, params)
        model.config.save_pretrained(tmp, architectures=[cls.hf_architecture])
    return {"model": cls.__name__, **parameter_summary(params)}


def flax_to_hf(
    src: str, dst: str, *, head: str | None = None, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """orbax folder -> transformers folder (`config.json` + `model.safetensors`), keeping the
    stored dtype."""
    src = readable_folder(src)
    if not os.path.isdir(os.path.join(src, "params")):
        raise CheckpointError(f"{src!r} is not an orbax folder (config.json + params/)")
    dtypes = {x.dtype for x in jax.tree.leaves(orbax_params_metadata(src))}
    dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    cls = model_class(src, head)
    model, params = cls.from_pretrained(src, param_dtype=dtype, progress=progress)
    with atomic_folder(dst, overwrite) as tmp:  # from_pretrained gave the unrolled layout
        write_pretrained(model, params, tmp, progress=progress)
    return {"model": cls.__name__, **parameter_summary(params)}
