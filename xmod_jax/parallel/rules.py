"""Logical-axis rules: which mesh axes split each logical axis of the parameters and the batch.

A mesh has up to three axes (`MESH_AXES`): `data` (replicas that split the batch), `fsdp`
(replicas that split the batch *and* the parameters, optimizer state included) and `tensor`
(devices that split each matmul: attention heads, MLP columns, adapter bottlenecks). Rules are
an ordered tuple of `(logical axis, mesh axes)` pairs with flax's semantics
(`flax.linen.logical_to_mesh_axes`): for each array, earlier rules win, a mesh axis is used at
most once per array, and a logical axis that no rule names stays replicated.

Presets (`PRESETS`):
- "data": every parameter replicated; only the batch is split.
- "fsdp": the `embed` axis of every parameter over `fsdp` (ZeRO-3 style: weights gathered per
  layer on the fly).
- "fsdp_tensor": "fsdp" plus `heads`, `mlp` and `adapter` over `tensor` (Megatron-style column
  and row splits of attention, feed-forward and the language adapters).

`vocab` is never split: XLM-R's 250002 rows divide by 2 only. `lang` (the stacked adapters'
language axis) is replicated unless `lang=` names a mesh axis; that rule then comes first, so
the adapters are split by language instead of by `embed` where both would use the same axis.
"""

from __future__ import annotations

from xmod_jax.nn.layers import LANG_AXIS

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch axis of inputs, targets and activations
PRESETS = ("data", "fsdp", "fsdp_tensor")
MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

_FSDP: Rules = (("embed", "fsdp"),)
_TENSOR: Rules = (("heads", "tensor"), ("mlp", "tensor"), ("adapter", "tensor"))
_PRESET_RULES: dict[str, Rules] = {"data": (), "fsdp": _FSDP, "fsdp_tensor": _TENSOR + _FSDP}


def sharding_rules(preset: str = "fsdp", *, lang: str | None = None) -> Rules:
    """The ordered `(logical axis, mesh axes)` rules of `preset`, the batch rule first.

    lang: a mesh axis to split the stacked adapters' language axis over (default: replicated).
    """
    if preset not in _PRESET_RULES:
        raise ValueError(f"unknown sharding preset {preset!r}; known: {', '.join(PRESETS)}")
    if lang is not None and lang not in MESH_AXES:
        raise ValueError(f"lang must name a mesh axis ({', '.join(MESH_AXES)}), got {lang!r}")
    lang_rule: Rules = () if lang is None else ((LANG_AXIS, lang),)
    return (("batch", BATCH_AXES), *lang_rule, *_PRESET_RULES[preset])


def as_tuple(mesh_axes: MeshAxes) -> tuple[str, ...]:
    """`None` -> (), "fsdp" -> ("fsdp",), a tuple unchanged."""
    if mesh_axes is None:
        return ()
    return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
