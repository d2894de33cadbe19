"""Runtime options: how a module computes (speed, memory), never what it computes.

The one place their names and allowed values live. Public modules take them as fields
(`XmodForMaskedLM(config, routing="single", scan_layers=True)`), validate them once when built, and
hand one `RuntimeOptions` down to their blocks, where only the block that uses an option reads it:
`routing` the language adapters, `attention_impl` the attention, `scan_layers` and `remat` the
layer stack.
"""

from __future__ import annotations

import dataclasses

ROUTINGS = ("gather", "single", "auto", "ragged")  # see nn/adapters.py for the cost model
ATTENTION_IMPLS = ("fused", "explicit")
REMAT_POLICIES = ("none", "full", "dots")


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """routing: how adapter rows reach each example; attention_impl: "fused"
    (`jax.nn.dot_product_attention`; the explicit path when probabilities or attention dropout are
    needed) or "explicit"; scan_layers: one `nn.scan` over stacked layer parameters instead of an
    unrolled loop; remat: rematerialisation of each layer in the backward pass."""

    routing: str = "gather"
    attention_impl: str = "fused"
    scan_layers: bool = False
    remat: str = "none"

    def __post_init__(self) -> None:
        for name, choices in (
            ("routing", ROUTINGS),
            ("attention_impl", ATTENTION_IMPLS),
            ("remat", REMAT_POLICIES),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers must be a bool, got {self.scan_layers!r}")
