"""Sharding constraints inside the modules, off unless `xmod_jax.parallel` turns them on.

They matter for FSDP, where the weights are split along D and the batch over the same devices:
- the residual stream between layers, `RESIDUAL_AXES` ([B, T, D] split by batch only). Without
  it the compiler splits activations like the weights (along D) and all-reduces every layer
  norm's statistics;
- tables whose rows are picked by id, the embeddings (`layers.Embed`) and the stacked language
  adapters (`adapters.LanguageDense`), are made whole along D and L before the lookup, as FSDP
  gathers every weight (tensor-parallel axes stay split). Looked up in a split table, the rows
  come out split along D and are rebuilt whole, global batch included, on every device (XLA
  warns "Involuntary full rematerialization").
`constrain` is the identity unless the caller has entered `activation_rules(rules)` (and set a
mesh with `jax.set_mesh`).

Why not flax's own `nn.logical_axis_rules` context: under it flax also constrains every boxed
parameter as it is read, and `nn.DenseGeneral` applies the 3-axis names of our attention
kernels to their flattened 2-D form, which fails to trace (flax 0.12).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax

RESIDUAL_AXES = ("batch", None, None)  # [B, T, D]
_RULES: contextvars.ContextVar[tuple] = contextvars.ContextVar("activation_rules", default=())


@contextlib.contextmanager
def activation_rules(rules: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """Within the block, `constrain` maps logical names to mesh axes by `rules` (flax's form)."""
    token = _RULES.set(tuple(rules))
    try:
        yield
    finally:
        _RULES.reset(token)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """`x` constrained to the sharding `names` map to under `activation_rules`, else `x`."""
    rules = _RULES.get()
    return nn.with_logical_constraint(x, names, rules=rules) if rules else x
