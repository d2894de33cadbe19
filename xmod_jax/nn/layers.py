"""Building blocks shared by the encoder and the heads: initialisers, dense, layer norm, lookups.

Every parameter carries logical axis names (see `xmod_jax.nn.axes`), attached with
`nn.with_logical_partitioning`; `XmodPreTrainedModule.init_params` unboxes them, so users only ever
see plain nested dicts of arrays.

Axis legend (see `xmod_jax.nn`): B batch, T positions, D hidden, V vocabulary,
L languages, R adapter bottleneck.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmod_jax.config import XmodConfig
from xmod_jax.nn.constraints import constrain
from xmod_jax.nn.options import RuntimeOptions

Dtype = Any
AxisNames = tuple[str | None, ...]
# The logical axis names every parameter carries (`None` = never sharded); `lang` is the
# language axis of the stacked adapters, found by this name and never by position.
AXIS_NAMES = ("vocab", "embed", "heads", "kv", "mlp", "adapter", "lang", "layers", "labels")
LANG_AXIS = "lang"


class ChildFields:
    """What an X-MOD module hands its children: dtypes and the runtime options."""

    @property
    def dtypes(self) -> dict[str, Dtype]:
        """`dtype` and `param_dtype`, for the parameter-holding helpers (dense, layer_norm)."""
        return {"dtype": self.dtype, "param_dtype": self.param_dtype}

    @property
    def inherited(self) -> dict[str, Any]:
        """The fields every child `XmodModule` takes over unchanged."""
        return {**self.dtypes, "options": self.options}


class XmodModule(ChildFields, nn.Module):
    """Base of the building blocks inside the public modules: the config, `dtype` (computation),
    `param_dtype` (storage) and the `RuntimeOptions`, passed down unchanged (already validated by
    the public module that built them)."""

    config: XmodConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    options: RuntimeOptions = RuntimeOptions()


def normal_init(config: XmodConfig, names: AxisNames) -> nn.initializers.Initializer:
    """N(0, initializer_range), as transformers initialises Linear and Embedding weights."""
    return nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), names)


def constant_init(value: float, names: AxisNames) -> nn.initializers.Initializer:
    return nn.with_logical_partitioning(nn.initializers.constant(value), names)


def dense(
    config: XmodConfig,
    features: int | Sequence[int],
    names: AxisNames,
    *,
    dtype: Dtype,
    param_dtype: Dtype,
    axis: int | Sequence[int] = -1,
    name: str,
) -> nn.DenseGeneral:
    """A torch-style Linear (with bias); `names` label the kernel's axes, inputs first."""
    num_out = 1 if isinstance(features, int) else len(features)
    return nn.DenseGeneral(
        features=features,
        axis=axis,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=normal_init(config, names),
        bias_init=constant_init(0.0, names[-num_out:]),
        name=name,
    )


def layer_norm(config: XmodConfig, *, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.LayerNorm:
    """LayerNorm with transformers' eps and biased variance; statistics are float32 under bf16."""
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,  # two-pass variance, closest to torch
        scale_init=constant_init(1.0, ("embed",)),
        bias_init=constant_init(0.0, ("embed",)),
        name=name,
    )


def take_rows(table: jax.Array, ids: jax.Array, axis: int = 0) -> jax.Array:
    """Gather `table` rows along `axis`; an out-of-range id yields NaN rows, never a clamped row.

    JAX clamps out-of-range gathers by default, which would silently pick another token's or
    another language's weights under `jit`, where ids cannot be checked on the host; `take`'s
    fill mode still wraps negative ids Python-style, so those are moved out of range first.
    """
    ids = jnp.where(ids < 0, table.shape[axis], ids)
    return jnp.take(table, ids, axis=axis, mode="fill", fill_value=jnp.nan)


def take_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Each row's vectors at its own positions: x [B, T, D], positions int [B, K] -> [B, K, D].

    Out-of-range positions give NaN vectors, as in `take_rows`.
    """
    positions = jnp.where(positions < 0, x.shape[1], positions)
    return jnp.take_along_axis(x, positions[..., None], axis=1, mode="fill", fill_value=jnp.nan)


class Embed(nn.Module):
    """Embedding table `embedding [num_embeddings, D]` looked up with NaN for bad ids.

    With `padding_idx` set, that row gets no gradient (torch's `padding_idx`) and is
    initialised to zeros, as transformers does.
    """

    config: XmodConfig
    num_embeddings: int
    names: AxisNames
    padding_idx: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        base = nn.initializers.normal(self.config.initializer_range)
        padding_idx = self.padding_idx

        def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype) -> jax.Array:
            table = base(key, shape, dtype)
            return table if padding_idx is None else table.at[padding_idx].set(0)

        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(init, self.names),
            (self.num_embeddings, self.config.hidden_size),
            self.param_dtype,
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        """ids: int [...] -> [..., D] in `dtype`."""
        # Whole inside the step, as FSDP gathers every weight: rows looked up in a split table
        # would be rebuilt whole on every device, global batch included (`nn.constraints`).
        rows = take_rows(constrain(self.embedding, (None, None)), ids)
        if self.padding_idx is not None:
            rows = jnp.where(
                (ids == self.padding_idx)[..., None], jax.lax.stop_gradient(rows), rows
            )
        return rows.astype(self.dtype)

    def table(self) -> jax.Array:
        """The table itself, `[num_embeddings, D]` (for the tied LM decoder)."""
        return self.embedding
