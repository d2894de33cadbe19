"""Decoders: causal LM, the functional cache, cross-attention, against transformers.

The `decoder` fixture takes the full folder round trip; the other cases convert in memory.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    ALL_FLAG_COMBOS,
    BASE_FLAGS,
    LARGE_FLAGS,
    assert_outputs_match,
    count_compiles,
    from_torch,
    hf_model,
    max_abs_diff,
    run_hf,
    torch,
)

import xmod_jax as xj

FLAG_SETS = {"xmod-base": BASE_FLAGS, "xmod-large-prenorm": LARGE_FLAGS}
IDS = np.array([[0, 5, 6, 7, 8, 9, 10, 2], [0, 11, 12, 13, 14, 15, 16, 17]])
LANGS = np.array([2, 0])
PADDED = np.array([[0, 5, 6, 7, 8, 9, 10, 2], [0, 11, 12, 13, 2, 1, 1, 1]])
MEMORY = np.random.default_rng(0).normal(size=(2, 5, 32)).astype(np.float32)
MEMORY_MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
FULL = dict(output_hidden_states=True, output_attentions=True)


def _load(folder=None, **overrides):
    """(transformers model, our model, params): through `folder` if given, else in memory."""
    reference = hf_model("XmodForCausalLM", is_decoder=True, **overrides)
    if folder is None:
        return (reference, *from_torch(reference))
    reference.save_pretrained(folder)
    model, params = xj.XmodForCausalLM.from_pretrained(folder)
    return reference, model, params


@pytest.fixture(scope="module", params=FLAG_SETS.values(), ids=FLAG_SETS.keys())
def decoder(request, checkpoint_dir):
    return _load(checkpoint_dir(), **request.param)


@pytest.fixture(scope="module", params=FLAG_SETS.values(), ids=FLAG_SETS.keys())
def seq2seq_decoder(request):
    return _load(add_cross_attention=True, **request.param)


def _hf_cached_logits(reference, ids, lang_ids, prompt, mask=None, **memory):
    """transformers' own incremental decoding: the prompt, then one token per call."""
    ids_t, lang_t = torch.as_tensor(ids), torch.as_tensor(lang_ids)
    mask_t = torch.ones_like(ids_t) if mask is None else torch.as_tensor(mask)
    memory = {k: torch.as_tensor(v) for k, v in memory.items()}
    with torch.no_grad():
        out = reference(
            ids_t[:, :prompt],
            lang_ids=lang_t,
            attention_mask=mask_t[:, :prompt],
            use_cache=True,
            **memory,
        )
        logits, cache = [out.logits], out.past_key_values
        for t in range(prompt, ids.shape[1]):
            out = reference(
                ids_t[:, t : t + 1],
                lang_ids=lang_t,
                past_key_values=cache,
                attention_mask=mask_t[:, : t + 1],
                use_cache=True,
                **memory,
            )
            logits.append(out.logits)
            cache = out.past_key_values
    return torch.cat(logits, dim=1).numpy()


def _our_cached_logits(model, params, ids, lang_ids, prompt, mask=None, **memory):
    cache = xj.init_cache(model.config, ids.shape[0], ids.shape[1])
    chunks, start = [], 0
    for stop in [prompt, *range(prompt + 1, ids.shape[1] + 1)]:
        out = model.apply(
            {"params": params},
            ids[:, start:stop],
            lang_ids=lang_ids,
            attention_mask=None if mask is None else mask[:, start:stop],
            past_key_values=cache,
            **(memory if start == 0 else {}),  # encoder states only with the prompt
        )
        chunks.append(np.asarray(out.logits))
        cache, start = out.past_key_values, stop
    assert int(cache.index) == ids.shape[1]
    return np.concatenate(chunks, axis=1)


# ----------------------------------------------------------------------------- full forward
@pytest.mark.parametrize(
    "flags", ALL_FLAG_COMBOS, ids=lambda f: "".join(str(int(v)) for v in f.values())
)
def test_causal_lm_matches_transformers_for_every_variant(flags):
    reference, model, params = _load(**flags)
    inputs = dict(input_ids=PADDED, lang_ids=LANGS, attention_mask=(PADDED != 1).astype(int))
    ours = model.apply({"params": params}, **inputs, **FULL)
    assert_outputs_match(ours, run_hf(reference, **inputs, **FULL))
    probs = np.asarray(ours.attentions[1])
    assert np.all(np.triu(probs, k=1) == 0)  # causal


def test_causal_lm_sets_is_decoder_when_loading(checkpoint_dir):
    folder = checkpoint_dir()
    hf_model("XmodForMaskedLM").save_pretrained(folder)  # a published-style MLM checkpoint
    model, _ = xj.XmodForCausalLM.from_pretrained(folder)
    assert model.config.is_decoder
    with pytest.raises(ValueError, match="is_decoder=True"):
        xj.XmodForCausalLM(xj.XmodConfig.from_pretrained(folder)).init_params(0)


# ------------------------------------------------------------------------------------- cache
def test_cached_decoding_equals_full_pass_and_transformers(decoder):
    reference, model, params = decoder
    full = np.asarray(model.apply({"params": params}, IDS, lang_ids=LANGS).logits)
    ours = _our_cached_logits(model, params, IDS, LANGS, prompt=3)
    theirs = _hf_cached_logits(reference, IDS, LANGS, prompt=3)
    assert max_abs_diff(ours, full.astype(np.float64)) <= 1e-5
    assert max_abs_diff(ours, theirs) <= 1e-5


def test_padded_prompt_cached_positions_follow_transformers(decoder):
    """Right-padded prompts: transformers' cached positions count the pads; so do ours."""
    reference, model, params = decoder
    ids = np.array([[0, 5, 6, 7, 21, 22], [0, 11, 1, 1, 23, 24]])  # row 1: prompt padded
    mask = (ids != 1).astype(np.int64)
    ours = _our_cached_logits(model, params, ids, LANGS, prompt=4, mask=mask)
    theirs = _hf_cached_logits(reference, ids, LANGS, prompt=4, mask=mask)
    assert max_abs_diff(ours, theirs) <= 1e-5
    full = model.apply({"params": params}, ids, lang_ids=LANGS, attention_mask=mask).logits
    assert max_abs_diff(ours[1, 4:], np.asarray(full[1, 4:], np.float64)) > 1e-4  # documented


def test_decode_loop_compiles_twice(decoder):
    _, model, params = decoder

    @jax.jit
    def step(params, ids, cache):
        out = model.apply({"params": params}, ids, lang_ids=LANGS, past_key_values=cache)
        return out.logits[:, -1], out.past_key_values

    cache = xj.init_cache(model.config, 2, 12)
    with count_compiles() as compiles:
        logits, cache = step(params, IDS[:, :4], cache)
        for _ in range(6):
            token = jnp.argmax(logits, axis=-1)[:, None]
            logits, cache = step(params, token, cache)
    assert compiles["jit(step)"] == 2
    assert int(cache.index) == 10


def test_cache_misuse_is_refused(decoder):
    _, model, params = decoder
    apply = lambda ids, **kw: model.apply({"params": params}, ids, lang_ids=0, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="init_cache"):
        apply(IDS, use_cache=True)
    with pytest.raises(ValueError, match="cache is full"):
        apply(IDS, past_key_values=xj.init_cache(model.config, 2, 5))
    with pytest.raises(ValueError, match="batch 3"):
        apply(IDS, past_key_values=xj.init_cache(model.config, 3, 10))
    with pytest.raises(ValueError, match="use_cache=False"):
        apply(IDS, past_key_values=xj.init_cache(model.config, 2, 10), use_cache=False)
    with pytest.raises(ValueError, match="decoder config"):
        xj.init_cache(xj.XmodConfig(), 1, 4)
    encoder = xj.XmodModel(
        xj.XmodConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=8
        )
    )
    with pytest.raises(ValueError, match="is_decoder=True"):
        encoder.apply({}, IDS, lang_ids=0, past_key_values=xj.init_cache(model.config, 2, 8))
    # Under jit the index is not known on the host: writing past the end gives NaN, not garbage.
    overflow = jax.jit(
        lambda p, c: model.apply({"params": p}, IDS, lang_ids=0, past_key_values=c).logits
    )
    cache = xj.init_cache(model.config, 2, 10)
    cache = cache.replace(index=jnp.asarray(5, jnp.int32))
    assert np.isnan(np.asarray(overflow(params, cache))).all()


# ---------------------------------------------------------------------------- cross-attention
def test_cross_attention_matches_transformers(seq2seq_decoder):
    reference, model, params = seq2seq_decoder
    inputs = dict(
        input_ids=IDS,
        lang_ids=LANGS,
        encoder_hidden_states=MEMORY,
        encoder_attention_mask=MEMORY_MASK,
    )
    ours = model.apply({"params": params}, **inputs, **FULL)
    theirs = run_hf(reference, **inputs, **FULL)
    assert "cross_attentions" in theirs
    assert_outputs_match(ours, theirs)
    # Without encoder states transformers skips the cross-attention blocks; so do we.
    plain = dict(input_ids=IDS, lang_ids=LANGS)
    assert_outputs_match(model.apply({"params": params}, **plain), run_hf(reference, **plain))


def test_cross_attention_keys_are_computed_once_and_cached(seq2seq_decoder):
    reference, model, params = seq2seq_decoder
    memory = dict(encoder_hidden_states=MEMORY, encoder_attention_mask=MEMORY_MASK)
    ours = _our_cached_logits(model, params, IDS, LANGS, prompt=3, **memory)
    theirs = _hf_cached_logits(reference, IDS, LANGS, prompt=3, **memory)
    full = model.apply({"params": params}, IDS, lang_ids=LANGS, **memory).logits
    assert max_abs_diff(ours, theirs) <= 1e-5
    assert max_abs_diff(ours, np.asarray(full, np.float64)) <= 1e-5
    cache = xj.init_cache(model.config, 2, 8)
    out = model.apply(
        {"params": params}, IDS[:, :3], lang_ids=LANGS, past_key_values=cache, **memory
    )
    layer = out.past_key_values.layers[0]
    assert layer.cross_key.shape == (2, 4, 5, 8)
    assert out.past_key_values.cross_mask.tolist() == MEMORY_MASK.astype(bool).tolist()


def test_encoder_states_need_cross_attention(decoder):
    _, model, params = decoder
    with pytest.raises(ValueError, match="add_cross_attention=True"):
        model.apply({"params": params}, IDS, lang_ids=0, encoder_hidden_states=MEMORY)
