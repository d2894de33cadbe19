"""Model outputs: `flax.struct.dataclass`es with transformers' field names.

Optional fields stay `None` unless the call asked for them (`output_hidden_states`,
`output_attentions`); `None` is an empty pytree, so outputs pass through `jax.jit` unchanged.
"""

from __future__ import annotations

import flax.struct
import jax

from xmod_jax.nn.cache import XmodCache


@flax.struct.dataclass
class XmodModelOutput:
    """`XmodModel`: last_hidden_state [B, T, D]; pooler_output [B, D] when the pooler exists;
    hidden_states: num_layers + 1 arrays [B, T, D]; attentions: num_layers arrays [B, N, T, S];
    cross_attentions [B, N, T, S_enc] when cross-attention ran; past_key_values: the updated
    cache when one was passed."""

    last_hidden_state: jax.Array
    pooler_output: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None
    cross_attentions: tuple[jax.Array, ...] | None = None
    past_key_values: XmodCache | None = None


@flax.struct.dataclass
class XmodLogitsOutput:
    """Heads with one logits tensor (float32): masked and causal LM [B, T, V], sequence
    classification [B, num_labels], token classification [B, T, num_labels], multiple choice
    [B, C]. Decoder fields as in `XmodModelOutput`."""

    logits: jax.Array
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None
    cross_attentions: tuple[jax.Array, ...] | None = None
    past_key_values: XmodCache | None = None


@flax.struct.dataclass
class XmodQuestionAnsweringOutput:
    """Extractive QA: start_logits and end_logits, float32 [B, T]."""

    start_logits: jax.Array
    end_logits: jax.Array
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None
