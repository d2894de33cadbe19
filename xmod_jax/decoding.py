"""Greedy and sampled decoding: the prompt pass and a `lax.while_loop` over the functional cache,
compiled as one function.

Positions follow the forward pass (RoBERTa positions counted from `pad_token_id + 1`, with the
cache length added as transformers does), so greedy decoding equals a greedy loop over
transformers' *forward* pass. transformers' own `generate()` feeds 0-based position ids built
from the attention mask instead, and its tokens differ from that loop; see the README.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xmod_jax.nn.cache import init_cache
from xmod_jax.nn.inputs import ModelInputs, prepare_inputs
from xmod_jax.nn.module import Params, XmodPreTrainedModule


def select_next_token(
    logits: jax.Array,
    rng: jax.Array,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> jax.Array:
    """logits float32 [B, V] -> int32 [B]: argmax when temperature is 0, else a sample from
    softmax(logits / temperature) restricted to the top_k tokens and the top_p nucleus."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1.0:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]  # [B, V], descending
        probs = jax.nn.softmax(ordered, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # the best token always stays
        cutoff = jnp.min(jnp.where(mass_before < top_p, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def generate(
    model: XmodPreTrainedModule,
    params: Params,
    input_ids: Any,
    lang_ids: Any = None,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    rng: jax.Array | None = None,
    attention_mask: Any = None,
    encoder_hidden_states: Any = None,
    encoder_attention_mask: Any = None,
) -> jax.Array:
    """Continue prompts with a decoder (`XmodForCausalLM`): int32 [B, P + max_new_tokens].

    input_ids [B, P] and lang_ids route as in the forward pass. temperature 0 is greedy; above 0
    it samples (needs `rng`), optionally within top_k / top_p. Rows that emit an `eos_token_id`
    are padded with `pad_token_id` afterwards, and the loop stops when every row has. Prompts of
    different lengths: left-pad them with `pad_token_id` and pass `attention_mask`; new tokens
    get the positions a forward pass over the whole row would give them (pads not counted).
    Note that the published X-MOD checkpoints are masked LMs, not trained for left-to-right
    generation: expect meaningful text only from models fine-tuned as decoders.
    """
    config = model.config
    if not config.is_decoder:
        raise ValueError("generate needs a decoder: XmodForCausalLM with config.is_decoder=True")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0 and (top_k is not None or top_p is not None):
        raise ValueError("top_k / top_p shape sampling: set temperature > 0 to use them")
    if top_k is not None and not 1 <= top_k <= config.vocab_size:
        raise ValueError(f"top_k must be in [1, vocab_size], got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature > 0 and rng is None:
        raise ValueError("sampling (temperature > 0) needs rng=jax.random.key(seed)")
    inputs = prepare_inputs(  # checks every value on the host before compiling
        config,
        input_ids=input_ids,
        lang_ids=lang_ids,
        attention_mask=attention_mask,
        encoder_hidden_states=encoder_hidden_states,
        encoder_attention_mask=encoder_attention_mask,
    )
    total = inputs.input_ids.shape[1] + max_new_tokens
    if total > config.max_sequence_length:
        raise ValueError(
            f"prompt + max_new_tokens = {total} exceeds the {config.max_sequence_length} positions"
        )
    eos = () if eos_token_id is None else tuple(int(t) for t in np.atleast_1d(eos_token_id))
    run = _decoder(model, max_new_tokens, float(temperature), top_k, top_p, eos)
    return run(
        params,
        inputs.input_ids,
        inputs.lang_ids,
        inputs.attention_mask,
        inputs.encoder_hidden_states,
        inputs.encoder_attention_mask,
        jax.random.key(0) if rng is None else rng,
    )


@functools.lru_cache(maxsize=32)
def _decoder(
    model: XmodPreTrainedModule,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos: tuple[int, ...],
):
    """The jitted prompt pass + decode loop for one set of static settings."""
    pad = model.config.pad_token_id
    choose = functools.partial(select_next_token, temperature=temperature, top_k=top_k, top_p=top_p)

    def is_eos(tokens: jax.Array) -> jax.Array:
        return (
            jnp.isin(tokens, jnp.asarray(eos, jnp.int32)) if eos else jnp.zeros_like(tokens, bool)
        )

    @jax.jit
    def run(params, input_ids, lang_ids, attention_mask, memory, memory_mask, rng):
        batch, prompt = input_ids.shape

        def forward(**inputs: Any) -> Any:
            # `generate` validated every argument on the host: the loop calls `forward` directly
            return model.apply(
                {"params": params},
                ModelInputs(inputs_embeds=None, lang_ids=lang_ids, **inputs),
                deterministic=True,
                output_hidden_states=False,
                output_attentions=False,
                method=model.forward,
            )

        length = prompt + max_new_tokens
        cache = init_cache(model.config, batch, length, model.dtype, model.scan_layers)
        out = forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=memory,
            encoder_attention_mask=memory_mask,
            past_key_values=cache,
        )
        rng, key = jax.random.split(rng)
        first = choose(out.logits[:, -1], key)  # [B]
        # RoBERTa position of the next real token: real (non-pad) tokens are counted from
        # pad + 1 and a pad token sits at position pad, exactly as in a full forward pass.
        next_position = pad + 1 + jnp.sum(input_ids != pad, axis=1, dtype=jnp.int32)  # [B]
        tokens = jnp.full((batch, max_new_tokens), pad, jnp.int32).at[:, 0].set(first)

        def unfinished(state):
            step, _, _, _, _, done = state
            return (step < max_new_tokens) & ~jnp.all(done)

        def decode_one(state):
            step, tokens, cache, next_position, rng, done = state
            last = jax.lax.dynamic_slice_in_dim(tokens, step - 1, 1, axis=1)  # [B, 1]
            is_real = last[:, 0] != pad
            out = forward(
                input_ids=last,
                position_ids=jnp.where(is_real, next_position, pad)[:, None],
                past_key_values=cache,
            )
            rng, key = jax.random.split(rng)
            token = jnp.where(done, pad, choose(out.logits[:, -1], key))
            tokens = tokens.at[:, step].set(token)
            next_position = next_position + is_real
            return step + 1, tokens, out.past_key_values, next_position, rng, done | is_eos(token)

        state = (1, tokens, out.past_key_values, next_position, rng, is_eos(first))
        tokens = jax.lax.while_loop(unfinished, decode_one, state)[1]
        return jnp.concatenate([input_ids, tokens], axis=1)

    return run
