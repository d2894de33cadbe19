"""Unrolled and scanned parameter layouts.

Unrolled (the default, and the checkpoint layout): `encoder/layer_0`, `encoder/layer_1`, ...
Scanned (`scan_layers=True`): one `encoder/layer` whose leaves carry a leading `layers` axis.
Both functions find the encoder under `roberta/` (heads) or at the top (`XmodModel`).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp

LAYER = re.compile(r"^layer_(\d+)$")


def _with_encoder(params: dict[str, Any], fn) -> dict[str, Any]:
    if "roberta" in params:
        return {**params, "roberta": _with_encoder(params["roberta"], fn)}
    if "encoder" not in params:
        raise ValueError("params hold no X-MOD encoder (no `encoder` or `roberta/encoder`)")
    return {**params, "encoder": fn(params["encoder"])}


def stack_layers(params: dict[str, Any]) -> dict[str, Any]:
    """Unrolled -> scanned: `layer_0 .. layer_{n-1}` become `layer` with leaves [n, ...]."""

    def stack(encoder: dict[str, Any]) -> dict[str, Any]:
        if "layer" in encoder:
            return encoder  # already scanned
        indices = sorted(int(LAYER.match(k).group(1)) for k in encoder if LAYER.match(k))
        if indices != list(range(len(indices))) or not indices:
            raise ValueError(f"encoder layers are not layer_0 .. layer_n: {sorted(encoder)}")
        rest = {k: v for k, v in encoder.items() if not LAYER.match(k)}
        layers = [encoder[f"layer_{i}"] for i in indices]
        return {**rest, "layer": jax.tree.map(lambda *x: jnp.stack(x), *layers)}

    return _with_encoder(params, stack)


def unstack_layers(params: dict[str, Any]) -> dict[str, Any]:
    """Scanned -> unrolled: `layer` with leaves [n, ...] becomes `layer_0 .. layer_{n-1}`."""

    def unstack(encoder: dict[str, Any]) -> dict[str, Any]:
        if "layer" not in encoder:
            return encoder  # already unrolled
        stacked = encoder["layer"]
        count = jax.tree.leaves(stacked)[0].shape[0]
        rest = {k: v for k, v in encoder.items() if k != "layer"}
        layers = {f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(count)}
        return {**rest, **layers}

    return _with_encoder(params, unstack)


def is_scanned(params: dict[str, Any]) -> bool:
    encoder = params.get("roberta", params).get("encoder", {})
    return "layer" in encoder
