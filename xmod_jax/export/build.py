"""Exporting a model's inference function with `jax.export`: symbolic batch and length, lang ids
as an input, parameters stored beside the function (see `runtime.py` for the file and the call).

Two functions, each `f(params, input_ids int32 [B, T], attention_mask int32 [B, T],
lang_ids int32 [B]) -> dict`:

- "mlm" (`XmodForMaskedLM`): `logits` float32 [B, T, V];
- "embed" (any model; its encoder, without the pooler, which the published checkpoints lack):
  `last_hidden_state` float32 [B, T, D] and `sentence_embedding` float32 [B, D], the mean over
  the attention mask that `xmod-jax embed` computes.

B and T are symbolic; T is bounded by the position table (`config.max_sequence_length`). The
function is lowered for each of `platforms` at once; any of them can run the one artifact.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp

from xmod_jax.atomic import atomic_path
from xmod_jax.export.runtime import FORMAT, FORMAT_VERSION, INPUTS, ExportedModel
from xmod_jax.nn.encoder import XmodModel
from xmod_jax.nn.heads import XmodForMaskedLM, XmodHeadModel
from xmod_jax.nn.module import Params, XmodPreTrainedModule

FUNCTIONS = ("mlm", "embed")
PLATFORMS = ("cpu", "cuda", "tpu")  # the default: one file for every accelerator jax targets
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def export_model(
    model: XmodPreTrainedModule,
    params: Params,
    *,
    function: str | None = None,
    platforms: Iterable[str] = PLATFORMS,
) -> ExportedModel:
    """The model's `function` ("mlm" or "embed"; None: "mlm" for an `XmodForMaskedLM`, else
    "embed") exported for `platforms`, with its params, as an `ExportedModel` to call or `save`."""
    if function is None:
        function = "mlm" if isinstance(model, XmodForMaskedLM) else "embed"
    platforms = check_platforms(platforms)
    _check_function(model, function)
    config = model.config
    if function == "mlm":
        fn = _mlm_function(model)
    else:
        model, params = _encoder(model, params)
        fn = _embed_function(model)
    batch, length = jax.export.symbolic_shape(
        "B, T", constraints=[f"T <= {config.max_sequence_length}"]
    )
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    specs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    exported = jax.export.export(jax.jit(fn), platforms=platforms)(
        specs, tokens, tokens, jax.ShapeDtypeStruct((batch,), jnp.int32)
    )
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "function": function,
        "model": type(model).__name__ if function == "mlm" else "XmodModel",
        "inputs": {
            "params": "the `params` tree stored in this file",
            "input_ids": "int32 [B, T]",
            "attention_mask": "int32 [B, T]",
            "lang_ids": f"int32 [B], indices into languages (0..{config.num_languages - 1})",
        },
        "outputs": {name: _shape_text(aval) for name, aval in _outputs(exported).items()},
        "max_length": config.max_sequence_length,
        "languages": list(config.languages),
        "platforms": list(platforms),
        "dtype": jnp.dtype(model.dtype).name,
        "versions": {
            "xmod_jax": _version("xmod-jax"),
            "jax": jax.__version__,
            "jaxlib": _version("jaxlib"),
            "calling_convention": exported.calling_convention_version,
        },
        "config": config.to_dict(),
    }
    assert tuple(header["inputs"])[1:] == INPUTS
    return ExportedModel(header, exported, jax.device_get(params))


def save(exported: ExportedModel, path: str | os.PathLike) -> int:
    """Writes `exported` to `path` atomically (a complete old file or a complete new one) ->
    its size in bytes."""
    with atomic_path(os.fspath(path)) as tmp, open(tmp, "wb") as f:
        return exported.write(f)


# ------------------------------------------------------------------------------- functions
def _mlm_function(model: XmodForMaskedLM):
    def mlm(params: Params, input_ids: Any, attention_mask: Any, lang_ids: Any) -> dict[str, Any]:
        out = model.apply(
            {"params": params}, input_ids, lang_ids=lang_ids, attention_mask=attention_mask
        )
        return {"logits": out.logits.astype(jnp.float32)}  # [B, T, V]

    return mlm


def _embed_function(model: XmodModel):
    def embed(params: Params, input_ids: Any, attention_mask: Any, lang_ids: Any) -> dict[str, Any]:
        out = model.apply(
            {"params": params}, input_ids, lang_ids=lang_ids, attention_mask=attention_mask
        )
        hidden = out.last_hidden_state.astype(jnp.float32)  # [B, T, D]
        weights = attention_mask.astype(jnp.float32)[..., None]  # [B, T, 1]
        pooled = (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)  # [B, D]
        return {"last_hidden_state": hidden, "sentence_embedding": pooled}

    return embed


def _encoder(model: XmodPreTrainedModule, params: Params) -> tuple[XmodModel, Params]:
    """The encoder of any model, without the pooler, and its params."""
    if isinstance(model, XmodHeadModel):
        params = params["roberta"]
    encoder = XmodModel(model.config, add_pooling_layer=False, **model.runtime_fields)
    return encoder, {k: v for k, v in params.items() if k != "pooler"}


def check_platforms(platforms: Iterable[str]) -> tuple[str, ...]:
    """Distinct names among `KNOWN_PLATFORMS`, as a tuple; else a ValueError naming them."""
    platforms = tuple(platforms)
    unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
    if unknown or not platforms or len(set(platforms)) != len(platforms):
        raise ValueError(
            f"platforms must be distinct names among {', '.join(KNOWN_PLATFORMS)}; got "
            f"{', '.join(map(repr, platforms)) or 'none'}"
        )
    return platforms


def _check_function(model: XmodPreTrainedModule, function: str) -> None:
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function {function!r}; known: {', '.join(FUNCTIONS)}")
    if function == "mlm" and not isinstance(model, XmodForMaskedLM):
        raise ValueError(
            f"the mlm function needs an XmodForMaskedLM, got {type(model).__name__}; "
            "export function='embed' instead"
        )


def _outputs(exported: jax.export.Exported) -> dict[str, Any]:
    tree = jax.tree.unflatten(exported.out_tree, exported.out_avals)
    return dict(sorted(tree.items()))


def _shape_text(aval: Any) -> str:
    return f"{aval.dtype} [{', '.join(str(d) for d in aval.shape)}]"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
