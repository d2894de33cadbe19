"""Encoder parity with transformers' torch classes for every config variant.

Each case builds a tiny random transformers model, converts its state dict in memory
(`helpers.from_torch`) and compares every output field (hidden states and attentions included)
on a padded batch that mixes languages. The folder round trip is tested in test_parity_heads,
test_loading and test_saving.
"""

import numpy as np
import pytest
from helpers import (
    ALL_FLAG_COMBOS,
    ATTENTION_MASK,
    INPUT_IDS,
    LANG_IDS,
    assert_outputs_match,
    from_torch,
    hf_model,
    run_hf,
)

FULL = dict(output_hidden_states=True, output_attentions=True)


def _ids(flags):
    return "-".join(f"{k}={int(v)}" for k, v in flags.items())


def _compare(class_name, flags, lang_ids=LANG_IDS, input_ids=INPUT_IDS):
    reference = hf_model(class_name, **flags)
    model, params = from_torch(reference)
    mask = (input_ids != 1).astype(np.int64)
    ours = model.apply(
        {"params": params}, input_ids, lang_ids=lang_ids, attention_mask=mask, **FULL
    )
    theirs = run_hf(reference, input_ids=input_ids, lang_ids=lang_ids, attention_mask=mask, **FULL)
    assert_outputs_match(ours, theirs)
    return ours, theirs


@pytest.mark.parametrize("flags", ALL_FLAG_COMBOS, ids=_ids)
def test_every_flag_combination_matches_transformers(flags):
    ours, theirs = _compare("XmodModel", flags)
    assert set(theirs) >= {"last_hidden_state", "pooler_output", "hidden_states", "attentions"}
    assert len(ours.hidden_states) == 3 and len(ours.attentions) == 2
    ours, theirs = _compare("XmodForMaskedLM", flags)
    assert set(theirs) >= {"logits", "hidden_states", "attentions"}


@pytest.mark.parametrize(
    "overrides",
    [
        dict(adapter_reduction_factor=3),  # bottleneck 32 // 3 = 10 (floor, as transformers)
        dict(adapter_reduction_factor=1, pre_norm=True),
        dict(languages=["zh_CN", "ar_AR", "en_XX", "sw_KE", "de_DE"]),
        dict(languages=["ta_IN"]),
        dict(hidden_act="gelu_new", layer_norm_eps=1e-12, type_vocab_size=1),
    ],
    ids=["reduction3", "reduction1-prenorm", "five-languages", "one-language", "gelu_new"],
)
def test_sizes_and_language_sets_match_transformers(overrides):
    n = len(overrides.get("languages", ["en_XX", "de_DE", "fr_XX"]))
    lang_ids = np.arange(len(INPUT_IDS)) % n
    _compare("XmodForMaskedLM", overrides, lang_ids)


@pytest.fixture(scope="module")
def encoder():
    reference = hf_model("XmodModel")
    return (reference, *from_torch(reference))


def test_unmasked_padding_and_token_types_match_transformers(encoder):
    """attention_mask=None attends to pads, exactly as transformers; token types are looked up."""
    reference, model, params = encoder
    token_types = np.zeros_like(INPUT_IDS)
    token_types[:, 3:] = 1
    inputs = dict(input_ids=INPUT_IDS, lang_ids=LANG_IDS, token_type_ids=token_types)
    assert_outputs_match(model.apply({"params": params}, **inputs), run_hf(reference, **inputs))


def test_explicit_positions_and_inputs_embeds_match_transformers(encoder):
    reference, model, params = encoder
    positions = np.tile(np.arange(5, 5 + INPUT_IDS.shape[1]), (len(INPUT_IDS), 1))
    inputs = dict(
        input_ids=INPUT_IDS,
        lang_ids=LANG_IDS,
        position_ids=positions,
        attention_mask=ATTENTION_MASK,
    )
    assert_outputs_match(model.apply({"params": params}, **inputs), run_hf(reference, **inputs))
    embeds = np.random.default_rng(0).normal(size=(*INPUT_IDS.shape, 32)).astype(np.float32)
    inputs = dict(inputs_embeds=embeds, lang_ids=LANG_IDS, attention_mask=ATTENTION_MASK)
    assert_outputs_match(model.apply({"params": params}, **inputs), run_hf(reference, **inputs))


def test_decoder_config_applies_causal_mask_like_transformers():
    """is_decoder=True: causal self-attention combined with the padding mask."""
    ours, theirs = _compare("XmodModel", dict(is_decoder=True))
    probs = np.asarray(ours.attentions[0])
    assert np.all(np.triu(probs[0, 0], k=1) == 0)
