"""Checking and normalising the call arguments of every module, once, before any computation.

Shape checks always run. Value checks (lang ids, token ids, token types, positions) run whenever
the arrays are concrete, i.e. outside `jax.jit`; under tracing the lookups yield NaN for bad ids
instead of clamping (see `layers.take_rows`).

Shapes may be symbolic (`jax.export` with `jax.export.symbolic_shape`): a symbolic dimension is at
least 1 by construction, so only concrete ones are checked for emptiness, and a symbolic sequence
length must be bounded by a constraint that fits the position table.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xmod_jax.config import XmodConfig
from xmod_jax.nn.cache import XmodCache

logger = logging.getLogger("xmod_jax")


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """Validated inputs, multiple-choice inputs already flattened to B*C rows.

    input_ids int32 [B, T] or inputs_embeds [B, T, D]; lang_ids int32 [B];
    attention_mask / token_type_ids / position_ids [B, T] or None; num_choices C or None;
    decoders: encoder_hidden_states [B, S_enc, D], encoder_attention_mask [B, S_enc], cache;
    LM heads: logits_positions int32 [B, K] or None.
    """

    input_ids: jax.Array | None
    inputs_embeds: jax.Array | None
    lang_ids: jax.Array
    attention_mask: jax.Array | None = None
    token_type_ids: jax.Array | None = None
    position_ids: jax.Array | None = None
    num_choices: int | None = None
    encoder_hidden_states: jax.Array | None = None
    encoder_attention_mask: jax.Array | None = None
    past_key_values: XmodCache | None = None
    logits_positions: jax.Array | None = None


def is_concrete(x: Any) -> bool:
    """True when `x` holds values (not a jit tracer)."""
    return not isinstance(x, jax.core.Tracer)


def _array(x: Any, name: str, kind: str) -> Any:
    """jax arrays and tracers pass through; anything else goes through numpy. Checks the dtype."""
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    if kind == "int" and not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
    if kind == "float" and not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must hold floats, got dtype {x.dtype}")
    return x


def _check_range(x: Any, name: str, low: int, high: int, what: str) -> None:
    """Concrete values of `x` must lie in [low, high)."""
    if x is None or not is_concrete(x):
        return
    values = np.asarray(x)
    bad = (values < low) | (values >= high)
    if bad.any():
        where = np.argwhere(bad)[:5]
        found = sorted({int(v) for v in values[bad].ravel()[:20]})
        raise ValueError(
            f"{name} out of range: found {found} at index {[tuple(map(int, w)) for w in where]}; "
            f"valid values are {low}..{high - 1} ({what})"
        )


def resolve_lang_ids(config: XmodConfig, lang_ids: Any, batch: int, repeats: int = 1) -> Any:
    """int, [] / [1] (broadcast) or [B] integer lang ids -> int32 [B * repeats] (each id repeated
    `repeats` times, for the choices of an example); None -> the default language.

    Concrete ids are read to the host once, checked and shaped there, and reach the device as one
    int32 array; traced ids get the shape checks and the same shaping with jnp, as do concrete ids
    for a symbolic batch (`jax.export`), which numpy cannot broadcast to.
    """
    if lang_ids is None:
        lang_ids = config.default_lang_id(how="lang_ids=config.lang_ids([...])")
    concrete = is_concrete(lang_ids)
    if concrete:
        lang_ids = np.asarray(lang_ids)  # one device -> host read for a jax array
        if lang_ids.dtype.kind in "USO":
            codes = [str(c) for c in lang_ids.ravel()]
            raise TypeError(f"lang_ids must be integers; map codes with config.lang_ids({codes!r})")
        if lang_ids.size == 0:
            lang_ids = lang_ids.astype(np.int32)  # `[]` reaches the shape check below
    lang_ids = _array(lang_ids, "lang_ids", "int")
    if lang_ids.shape not in ((), (1,), (batch,)):
        raise ValueError(
            f"lang_ids must have shape [], [1] or [B]=[{batch}] (one language per example), got "
            f"{list(lang_ids.shape)}; per-token language ids are not supported"
        )
    _check_range(
        lang_ids, "lang_ids", 0, config.num_languages, f"languages {', '.join(config.languages)}"
    )
    xp = np if concrete and not jax.export.is_symbolic_dim(batch) else jnp
    lang_ids = xp.broadcast_to(lang_ids.astype(xp.int32).reshape(-1), (batch,))
    return jnp.asarray(xp.repeat(lang_ids, repeats) if repeats > 1 else lang_ids)


def prepare_inputs(
    config: XmodConfig,
    *,
    input_ids: Any = None,
    lang_ids: Any = None,
    attention_mask: Any = None,
    token_type_ids: Any = None,
    position_ids: Any = None,
    inputs_embeds: Any = None,
    encoder_hidden_states: Any = None,
    encoder_attention_mask: Any = None,
    past_key_values: XmodCache | None = None,
    use_cache: bool | None = None,
    logits_positions: Any = None,
    has_choices: bool = False,
    takes_logits_positions: bool = False,
) -> ModelInputs:
    """Validate the public call arguments and return flat `ModelInputs`.

    Token-shaped arguments are [B, T] ([B, C, T] when `has_choices`); `inputs_embeds` adds D.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    rank = 3 if has_choices else 2
    layout = "[B, C, T]" if has_choices else "[B, T]"
    if input_ids is not None:
        input_ids = _array(input_ids, "input_ids", "int")
        if input_ids.ndim != rank:
            raise ValueError(f"input_ids must be {layout}, got shape {list(input_ids.shape)}")
        shape = tuple(input_ids.shape)
    else:
        inputs_embeds = _array(inputs_embeds, "inputs_embeds", "float")
        if inputs_embeds.ndim != rank + 1 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be {layout[:-1]}, D={config.hidden_size}], "
                f"got shape {list(inputs_embeds.shape)}"
            )
        shape = tuple(inputs_embeds.shape[:-1])
    if any(not jax.export.is_symbolic_dim(d) and d < 1 for d in shape):
        raise ValueError(f"empty input: shape {list(shape)}")

    def token_shaped(x: Any, name: str, kind: str) -> Any:
        if x is None:
            return None
        x = _array(x, name, kind)
        if tuple(x.shape) != shape:
            raise ValueError(
                f"{name} must have the input's shape {list(shape)}, got {list(x.shape)}"
            )
        return x

    attention_mask = token_shaped(attention_mask, "attention_mask", "any")
    token_type_ids = token_shaped(token_type_ids, "token_type_ids", "int")
    position_ids = token_shaped(position_ids, "position_ids", "int")
    length = shape[-1]
    # The cache's fill level, read to the host once per call (None under jit).
    start = None
    if isinstance(past_key_values, XmodCache) and is_concrete(past_key_values.index):
        start = int(past_key_values.index)
    cache = _check_cache(config, past_key_values, use_cache, shape, has_choices, start)
    if position_ids is None:
        _check_length(config, (start or 0) + length)
    encoder_hidden_states, encoder_attention_mask = _check_encoder_states(
        config, encoder_hidden_states, encoder_attention_mask, shape[0], cache
    )
    num_choices = shape[1] if has_choices else None
    lang_ids = resolve_lang_ids(config, lang_ids, shape[0], repeats=num_choices or 1)
    logits_positions = _check_logits_positions(logits_positions, shape, takes_logits_positions)
    _check_range(input_ids, "input_ids", 0, config.vocab_size, "the vocabulary")
    _check_range(token_type_ids, "token_type_ids", 0, config.type_vocab_size, "type_vocab_size")
    _check_range(
        position_ids, "position_ids", 0, config.max_position_embeddings, "max_position_embeddings"
    )
    if attention_mask is None and input_ids is not None and is_concrete(input_ids):
        if (np.asarray(input_ids) == config.pad_token_id).any():
            logger.warning(
                "input_ids contain the pad token (%d) but attention_mask is None: padded "
                "positions are attended, as in transformers; pass attention_mask to mask them",
                config.pad_token_id,
            )

    def flat(x: Any, dtype: Any) -> jax.Array | None:
        if x is None:
            return None
        x = jnp.asarray(x, dtype)
        return x.reshape(-1, *x.shape[2:]) if has_choices else x

    return ModelInputs(
        input_ids=flat(input_ids, jnp.int32),
        inputs_embeds=flat(inputs_embeds, None),
        lang_ids=lang_ids,
        attention_mask=flat(attention_mask, None),
        token_type_ids=flat(token_type_ids, jnp.int32),
        position_ids=flat(position_ids, jnp.int32),
        num_choices=num_choices,
        encoder_hidden_states=encoder_hidden_states,
        encoder_attention_mask=encoder_attention_mask,
        past_key_values=cache,
        logits_positions=logits_positions,
    )


def _check_length(config: XmodConfig, length: Any) -> None:
    """`length` (an int, or a symbolic dimension under `jax.export`) must fit the position table."""
    limit = config.max_sequence_length
    where = (
        f"this model's {limit} positions (max_position_embeddings="
        f"{config.max_position_embeddings} minus pad_token_id + 1)"
    )
    try:
        too_long = length > limit
    except jax.errors.InconclusiveDimensionOperation:  # an unbounded symbolic length
        # Positions past the table would give NaN; refuse the export instead.
        raise ValueError(
            f"the symbolic sequence length {length} may exceed {where}; bound it when exporting: "
            f'jax.export.symbolic_shape(..., constraints=["{length} <= {limit}"])'
        ) from None
    if too_long:
        raise ValueError(f"sequence length {length} exceeds {where}")


def _check_logits_positions(positions: Any, shape: tuple[int, ...], allowed: bool) -> Any:
    """LM heads' `logits_positions`: int [B, K] indices into this call's T tokens."""
    if positions is None:
        return None
    if not allowed:
        raise ValueError("logits_positions is an argument of the LM heads only")
    positions = _array(positions, "logits_positions", "int")
    if positions.ndim != 2 or positions.shape[0] != shape[0] or positions.shape[1] < 1:
        raise ValueError(
            f"logits_positions must be [B={shape[0]}, K] with K >= 1, got {list(positions.shape)}"
        )
    _check_range(positions, "logits_positions", 0, shape[-1], "positions of this call's tokens")
    return jnp.asarray(positions, jnp.int32)


def _check_cache(
    config: XmodConfig,
    cache: XmodCache | None,
    use_cache: bool | None,
    shape: tuple[int, ...],
    has_choices: bool,
    index: int | None,
) -> XmodCache | None:
    """`past_key_values` must be an `init_cache` cache that fits this batch; `index` is its fill
    level when concrete."""
    if use_cache and cache is None:
        raise ValueError(
            "use_cache=True needs a preallocated cache: pass "
            "past_key_values=xmod_jax.init_cache(config, batch_size, max_length)"
        )
    if cache is None:
        return None
    if use_cache is False:
        raise ValueError("past_key_values was given with use_cache=False; drop one of them")
    if not isinstance(cache, XmodCache):
        raise TypeError(f"past_key_values must be an XmodCache from init_cache, got {type(cache)}")
    if not config.is_decoder or has_choices:
        raise ValueError("past_key_values needs a decoder (config.is_decoder=True)")
    if cache.num_layers != config.num_hidden_layers or cache.batch_size != shape[0]:
        raise ValueError(
            f"past_key_values holds {cache.num_layers} layers for batch {cache.batch_size}; "
            f"this call needs {config.num_hidden_layers} layers for batch {shape[0]}"
        )
    if index is not None and index + shape[-1] > cache.max_length:
        raise ValueError(
            f"the cache is full: {index} of {cache.max_length} positions used, "
            f"{shape[-1]} more requested; make it longer with init_cache(..., max_length)"
        )
    return cache


def _check_encoder_states(
    config: XmodConfig, states: Any, mask: Any, batch: int, cache: XmodCache | None
) -> tuple[Any, Any]:
    """Cross-attention inputs: states [B, S_enc, D] and mask [B, S_enc] (decoders only)."""
    if states is None:
        if mask is not None and (cache is None or not cache.has_cross_attention):
            raise ValueError("encoder_attention_mask was given without encoder_hidden_states")
        return None, None
    if not config.add_cross_attention:
        raise ValueError(
            "encoder_hidden_states need cross-attention layers: build the model with "
            "config.is_decoder=True and add_cross_attention=True"
        )
    states = _array(states, "encoder_hidden_states", "float")
    if states.ndim != 3 or states.shape[0] != batch or states.shape[2] != config.hidden_size:
        raise ValueError(
            f"encoder_hidden_states must be [B={batch}, S_enc, D={config.hidden_size}], "
            f"got {list(states.shape)}"
        )
    if mask is not None:
        mask = _array(mask, "encoder_attention_mask", "any")
        if tuple(mask.shape) != tuple(states.shape[:2]):
            raise ValueError(
                f"encoder_attention_mask must be {list(states.shape[:2])}, got {list(mask.shape)}"
            )
    return jnp.asarray(states), None if mask is None else jnp.asarray(mask)
