"""`generate`: greedy decoding equals a greedy loop over transformers' forward pass."""

import jax
import numpy as np
import pytest
from helpers import count_compiles, from_torch, hf_model, torch

import xmod_jax as xj
from xmod_jax.decoding import select_next_token

PROMPT = np.array([[0, 5, 6, 7], [0, 11, 12, 13]])
LANGS = np.array([2, 0])
DECODE_LOOP = "jit(run)"  # what generate's jitted prompt pass and decode loop compile as


@pytest.fixture(scope="module")
def decoder():
    reference = hf_model("XmodForCausalLM", is_decoder=True, seed=3)
    return (reference, *from_torch(reference))


def hf_greedy_loop(reference, ids, lang_ids, steps, arange_positions=False):
    """Greedy decoding by calling transformers' forward pass on the whole sequence each step."""
    ids = torch.as_tensor(ids)
    for _ in range(steps):
        extra = {}
        if arange_positions:  # what transformers' generate() feeds
            extra["position_ids"] = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
        with torch.no_grad():
            logits = reference(ids, lang_ids=torch.as_tensor(lang_ids), **extra).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids.numpy()


def test_greedy_equals_greedy_loop_over_transformers_forward(decoder):
    reference, model, params = decoder
    ours = np.asarray(xj.generate(model, params, PROMPT, LANGS, max_new_tokens=8))
    np.testing.assert_array_equal(ours, hf_greedy_loop(reference, PROMPT, LANGS, 8))


def test_transformers_generate_uses_other_positions(decoder):
    """transformers' generate() feeds 0-based positions; it equals that loop, not the forward
    pass, so its tokens differ from ours (and from its own forward pass) on this model."""
    reference, model, params = decoder
    with torch.no_grad():
        theirs = reference.generate(
            torch.as_tensor(PROMPT),
            attention_mask=torch.ones(PROMPT.shape, dtype=torch.long),
            lang_ids=torch.as_tensor(LANGS),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=1,
        ).numpy()
    np.testing.assert_array_equal(theirs, hf_greedy_loop(reference, PROMPT, LANGS, 8, True))
    ours = np.asarray(xj.generate(model, params, PROMPT, LANGS, max_new_tokens=8))
    assert (ours != theirs).any()


def test_left_padded_prompts_decode_like_unpadded_rows(decoder):
    reference, model, params = decoder
    padded = np.array([[1, 1, 0, 5, 6, 7], [0, 11, 12, 13, 14, 15]])
    ours = np.asarray(
        xj.generate(
            model, params, padded, LANGS, max_new_tokens=5, attention_mask=(padded != 1).astype(int)
        )
    )
    row0 = hf_greedy_loop(reference, padded[:1, 2:], LANGS[:1], 5)
    row1 = hf_greedy_loop(reference, padded[1:], LANGS[1:], 5)
    np.testing.assert_array_equal(ours[0, 2:], row0[0])
    np.testing.assert_array_equal(ours[1], row1[0])


def test_eos_stops_rows_and_pads_them(decoder):
    reference, model, params = decoder
    free = hf_greedy_loop(reference, PROMPT, LANGS, 8)
    eos = int(free[0, 6])  # the third new token of row 0 plays end-of-sequence
    ours = np.asarray(xj.generate(model, params, PROMPT, LANGS, max_new_tokens=8, eos_token_id=eos))
    stop = 4 + list(free[0, 4:]).index(eos)
    np.testing.assert_array_equal(ours[0, : stop + 1], free[0, : stop + 1])
    assert (ours[0, stop + 1 :] == model.config.pad_token_id).all()
    row1 = free[1]
    if eos in row1[4:]:
        cut = 4 + list(row1[4:]).index(eos)
        np.testing.assert_array_equal(ours[1, : cut + 1], row1[: cut + 1])
    else:
        np.testing.assert_array_equal(ours[1], row1)


def test_sampling_is_reproducible_and_respects_top_k(decoder):
    _, model, params = decoder
    sample = lambda seed, **kw: np.asarray(  # noqa: E731
        xj.generate(
            model,
            params,
            PROMPT,
            LANGS,
            max_new_tokens=6,
            temperature=1.5,
            rng=jax.random.key(seed),
            **kw,
        )
    )
    np.testing.assert_array_equal(sample(0), sample(0))
    assert (sample(0) != sample(1)).any()
    greedy = np.asarray(xj.generate(model, params, PROMPT, LANGS, max_new_tokens=6))
    np.testing.assert_array_equal(sample(5, top_k=1), greedy)
    np.testing.assert_array_equal(sample(5, top_p=1e-6), greedy)
    logits = model.apply({"params": params}, PROMPT, lang_ids=LANGS).logits[:, -1]
    allowed = np.argsort(-np.asarray(logits), axis=-1)[:, :3]
    for seed in range(5):
        first = sample(seed, top_k=3)[:, 4]
        assert all(first[b] in allowed[b] for b in range(2))


def test_top_p_keeps_the_smallest_nucleus():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    draws = {
        int(select_next_token(logits, jax.random.key(s), 1.0, None, 0.7)[0]) for s in range(60)
    }
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.7; 0.15 and 0.05 are cut


def test_generate_compiles_once_per_shape(decoder):
    _, model, params = decoder
    with count_compiles() as compiles:
        xj.generate(model, params, PROMPT, LANGS, max_new_tokens=3)
        xj.generate(model, params, PROMPT[:, :3], [1, 1], max_new_tokens=3)
        xj.generate(model, params, PROMPT, [0, 1], max_new_tokens=3)
    assert compiles[DECODE_LOOP] == 2  # two prompt shapes


def test_generate_refuses_bad_settings(decoder):
    _, model, params = decoder
    run = lambda **kw: xj.generate(model, params, PROMPT, LANGS, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="rng"):
        run(max_new_tokens=2, temperature=1.0)
    with pytest.raises(ValueError, match="temperature > 0"):
        run(max_new_tokens=2, top_k=5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        run(max_new_tokens=0)
    with pytest.raises(ValueError, match="exceeds"):
        run(max_new_tokens=40)
    with pytest.raises(ValueError, match="lang_ids out of range"):
        xj.generate(model, params, PROMPT, [0, 7], max_new_tokens=2)
    encoder = xj.XmodForMaskedLM(model.config.with_default_language(None))
    with pytest.raises(ValueError, match="decoder"):
        xj.generate(
            encoder.clone(config=xj.XmodConfig(**{**model.config.to_dict(), "is_decoder": False})),
            params,
            PROMPT,
            LANGS,
            max_new_tokens=2,
        )
