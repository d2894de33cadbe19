"""Input validation and language routing of the model call.

Reference numbers come from transformers' torch `XmodModel` (tests/helpers.py), from running each
example alone, or from hand-built expectations (NaN rows, error messages); never from a second call
of the code under test with the same arguments.
"""

import logging

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    ATTENTION_MASK,
    INPUT_IDS,
    LANG_IDS,
    assert_outputs_match,
    count_compiles,
    from_torch,
    hf_model,
    run_hf,
)
from jax.experimental import checkify

import xmod_jax as xj
from xmod_jax.nn.inputs import prepare_inputs

CONFIG = xj.XmodConfig(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    languages=["en_XX", "de_DE", "fr_XX"],
)
B, T = INPUT_IDS.shape  # 4 x 8, padded, pad id 1
MIXED = [2, 0, 1, 0]  # == LANG_IDS: all three languages, unordered
assert MIXED == LANG_IDS.tolist()


@pytest.fixture(scope="module")
def model():
    return xj.XmodModel(CONFIG)


@pytest.fixture(scope="module")
def params(model):
    return model.init_params(0)


@pytest.fixture(scope="module")
def run(model, params):
    """Plain (eager, concrete) call on the padded reference batch unless overridden."""

    def call(**kwargs):
        kwargs.setdefault("input_ids", INPUT_IDS)
        if kwargs.get("inputs_embeds") is not None:
            kwargs.pop("input_ids")
        kwargs.setdefault("attention_mask", ATTENTION_MASK)
        return model.apply({"params": params}, **kwargs)

    return call


@pytest.fixture(scope="module")
def explicit(run):
    """Outputs for the explicit int32 [B] form of a lang id list, computed once per list."""
    cache = {}

    def get(langs):
        key = tuple(langs)
        if key not in cache:
            cache[key] = run(lang_ids=jnp.asarray(langs, jnp.int32))
        return cache[key]

    return get


@pytest.fixture(scope="module")
def jitted(model, params):
    """One compiled forward for [B, T] inputs; returns (last_hidden_state, pooler_output)."""

    @jax.jit
    def forward(params, input_ids, lang_ids, attention_mask):
        out = model.apply(
            {"params": params},
            input_ids=input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
        )
        return out.last_hidden_state, out.pooler_output

    def call(ids, langs):
        out = forward(
            params, jnp.asarray(ids, jnp.int32), jnp.asarray(langs, jnp.int32), ATTENTION_MASK
        )
        return tuple(np.asarray(x) for x in out)

    return call


def assert_same(a, b):
    np.testing.assert_array_equal(a.last_hidden_state, b.last_hidden_state)
    np.testing.assert_array_equal(a.pooler_output, b.pooler_output)


# -------------------------------------------------------------------- lang_ids forms and routing
def test_languages_have_different_adapters(explicit):
    """Guard for the routing tests: each language changes the output."""
    outs = [explicit([k] * B).last_hidden_state for k in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert float(jnp.max(jnp.abs(outs[i] - outs[j]))) > 1e-3, (i, j)


LANG_FORMS = [
    pytest.param(MIXED, MIXED, id="list"),
    pytest.param(tuple(MIXED), MIXED, id="tuple"),
    pytest.param(np.array(MIXED, np.int64), MIXED, id="np-int64"),
    pytest.param(np.array(MIXED, np.uint8), MIXED, id="np-uint8"),
    pytest.param(jnp.array(MIXED, jnp.int32), MIXED, id="jnp-int32"),
    pytest.param([0, 2, 2, 1], [0, 2, 2, 1], id="other-mix"),
    pytest.param(2, [2] * B, id="int"),
    pytest.param(np.int64(1), [1] * B, id="np-int64-scalar"),
    pytest.param(np.array(0), [0] * B, id="shape-[]"),
    pytest.param(np.array([2], np.int64), [2] * B, id="np-shape-[1]"),
    pytest.param([1], [1] * B, id="list-[1]"),
    pytest.param(jnp.array([0]), [0] * B, id="jnp-shape-[1]"),
    pytest.param(jnp.array(2), [2] * B, id="jnp-shape-[]"),
]


@pytest.mark.parametrize("lang_ids, langs", LANG_FORMS)
def test_lang_id_forms_equal_explicit_batch_form(run, explicit, lang_ids, langs):
    assert_same(run(lang_ids=lang_ids), explicit(langs))


@pytest.mark.parametrize("lang_ids, langs", LANG_FORMS)
def test_lang_ids_are_cast_to_int32_per_example(lang_ids, langs):
    inputs = prepare_inputs(CONFIG, input_ids=INPUT_IDS, lang_ids=lang_ids)
    assert inputs.lang_ids.dtype == jnp.int32
    assert inputs.lang_ids.tolist() == langs


def test_mixed_batch_equals_per_example_runs(run, explicit):
    batch = explicit(MIXED)
    for b, lang in enumerate(MIXED):
        alone = run(
            input_ids=INPUT_IDS[b : b + 1],
            attention_mask=ATTENTION_MASK[b : b + 1],
            lang_ids=[lang],
        )
        np.testing.assert_allclose(
            batch.last_hidden_state[b], alone.last_hidden_state[0], rtol=0, atol=1e-6
        )
        np.testing.assert_allclose(
            batch.pooler_output[b], alone.pooler_output[0], rtol=0, atol=1e-6
        )


def test_default_language_is_used_when_lang_ids_is_none(params, explicit):
    model_de = xj.XmodModel(CONFIG.with_default_language("de_DE"))
    german = CONFIG.languages.index("de_DE")
    out = model_de.apply({"params": params}, input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK)
    assert_same(out, explicit([german] * B))
    # explicit lang_ids still win over the default
    out = model_de.apply(
        {"params": params}, input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, lang_ids=MIXED
    )
    assert_same(out, explicit(MIXED))


def test_missing_lang_ids_without_default_language_raises(run):
    with pytest.raises(ValueError, match="default_language"):
        run(lang_ids=None)


@pytest.mark.parametrize(
    "lang_ids",
    [
        pytest.param(np.zeros((B, T), np.int32), id="per-token-[B,T]"),
        pytest.param(np.zeros(B + 1, np.int32), id="[B+1]"),
        pytest.param(np.zeros(B - 1, np.int32), id="[B-1]"),
        pytest.param(np.zeros(0, np.int32), id="[0]"),
        pytest.param(np.zeros((B, 1), np.int32), id="[B,1]"),
        pytest.param(np.zeros((1, 1), np.int32), id="[1,1]"),
        pytest.param([MIXED], id="nested-list-[1,B]"),
        pytest.param(jnp.zeros((B, T), jnp.int32), id="jnp-per-token"),
    ],
)
def test_lang_ids_of_other_shapes_raise_value_error(run, lang_ids):
    with pytest.raises(ValueError, match="lang_ids must have shape"):
        run(lang_ids=lang_ids)


def test_empty_lang_id_list_raises_value_error(run):
    with pytest.raises(ValueError, match="lang_ids must have shape"):
        run(lang_ids=[])


@pytest.mark.parametrize(
    "lang_ids",
    [
        pytest.param(1.0, id="float"),
        pytest.param(np.float64(1.0), id="np-float64-scalar"),
        pytest.param([2.0, 0.0, 1.0, 0.0], id="float-list"),
        pytest.param(np.array(MIXED, np.float32), id="np-float32"),
        pytest.param(jnp.array(MIXED, jnp.float32), id="jnp-float32"),
    ],
)
def test_float_lang_ids_raise_type_error(run, lang_ids):
    with pytest.raises(TypeError, match="lang_ids must hold integers"):
        run(lang_ids=lang_ids)


@pytest.mark.parametrize(
    "lang_ids",
    [
        pytest.param("de_DE", id="str"),
        pytest.param(["fr_XX", "en_XX", "de_DE", "en_XX"], id="list"),
        pytest.param(("de_DE",), id="tuple-[1]"),
        pytest.param(
            np.array(["fr_XX", "en_XX", "de_DE", "en_XX"]),
            id="np-str-array",
        ),
    ],
)
def test_string_codes_raise_type_error_pointing_to_config_lang_ids(run, lang_ids):
    with pytest.raises(TypeError, match=r"config\.lang_ids"):
        run(lang_ids=lang_ids)


# ---------------------------------------------------------------------- value checks (concrete)
def _with(array, index, value):
    array = np.array(array)
    array[index] = value
    return array


POSITIONS = np.broadcast_to(np.arange(2, 2 + T), (B, T))
LONG_IDS = np.concatenate([[0], np.full(36, 5), [2]])[None]  # T = 38 = 40 - 1 - 1: the longest

BAD_VALUES = [
    pytest.param(dict(lang_ids=[2, 0, 3, 0]), r"lang_ids out of range: found \[3\]", id="lang-3"),
    pytest.param(
        dict(lang_ids=[2, -1, 1, 0]), r"lang_ids out of range: found \[-1\]", id="lang-neg"
    ),
    pytest.param(dict(lang_ids=3), r"lang_ids out of range: found \[3\]", id="lang-int-3"),
    pytest.param(dict(lang_ids=jnp.array([0, 0, 0, 7])), "lang_ids out of range", id="lang-jnp"),
    pytest.param(
        dict(lang_ids=MIXED, input_ids=_with(INPUT_IDS, (1, 2), 99)),
        r"input_ids out of range: found \[99\]",
        id="input-id-vocab",
    ),
    pytest.param(
        dict(lang_ids=MIXED, input_ids=_with(INPUT_IDS, (3, 5), -4)),
        r"input_ids out of range: found \[-4\]",
        id="input-id-neg",
    ),
    pytest.param(
        dict(lang_ids=MIXED, token_type_ids=_with(np.zeros((B, T), int), (0, 1), 2)),
        r"token_type_ids out of range: found \[2\]",
        id="token-type",
    ),
    pytest.param(
        dict(lang_ids=MIXED, token_type_ids=_with(np.zeros((B, T), int), (0, 1), -1)),
        r"token_type_ids out of range: found \[-1\]",
        id="token-type-neg",
    ),
    pytest.param(
        dict(lang_ids=MIXED, position_ids=_with(POSITIONS, (2, 7), 40)),
        r"position_ids out of range: found \[40\]",
        id="position",
    ),
    pytest.param(
        dict(lang_ids=MIXED, position_ids=_with(POSITIONS, (2, 7), -1)),
        r"position_ids out of range: found \[-1\]",
        id="position-neg",
    ),
    pytest.param(
        dict(lang_ids=0, input_ids=np.concatenate([LONG_IDS, [[2]]], axis=1), attention_mask=None),
        "sequence length 39",
        id="too-long",
    ),
]


@pytest.mark.parametrize("kwargs, match", BAD_VALUES)
def test_bad_values_raise_before_computing(model, kwargs, match):
    """Empty params: reaching the computation would raise flax's error, not this ValueError."""
    kwargs = {"input_ids": INPUT_IDS, "attention_mask": ATTENTION_MASK, **kwargs}
    with pytest.raises(ValueError, match=match):
        model.apply({"params": {}}, **kwargs)


@pytest.mark.parametrize("kwargs, match", BAD_VALUES)
def test_bad_values_raise_with_real_params(run, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run(**kwargs)


def test_valid_values_with_empty_params_reach_the_computation(model):
    """Control for the test above: valid inputs get past validation into flax's param lookup."""
    with pytest.raises(flax.errors.FlaxError):
        model.apply(
            {"params": {}},
            input_ids=INPUT_IDS,
            lang_ids=MIXED,
            attention_mask=ATTENTION_MASK,
            position_ids=POSITIONS,
        )


def test_longest_sequence_works(run):
    out = run(input_ids=LONG_IDS, lang_ids=1, attention_mask=None)
    assert out.last_hidden_state.shape == (1, 38, 32)
    assert np.isfinite(out.last_hidden_state).all()


def test_boundary_values_are_accepted(run):
    token_types = np.ones((B, T), int)  # type_vocab_size - 1
    positions = _with(POSITIONS, (0, 0), 39)  # max_position_embeddings - 1
    ids = _with(INPUT_IDS, (0, 1), 98)  # vocab_size - 1
    out = run(
        input_ids=ids, lang_ids=[2, 0, 1, 2], token_type_ids=token_types, position_ids=positions
    )
    assert np.isfinite(out.last_hidden_state).all()


# ------------------------------------------------------------------------------- shape checks
EMBEDS = np.zeros((B, T, 32), np.float32)
SHAPE_ERRORS = [
    pytest.param(dict(input_ids=INPUT_IDS[0]), r"input_ids must be \[B, T\]", id="ids-1d"),
    pytest.param(dict(input_ids=INPUT_IDS[None]), r"input_ids must be \[B, T\]", id="ids-3d"),
    pytest.param(
        dict(attention_mask=ATTENTION_MASK[:, :-1]), "attention_mask must have", id="mask-short"
    ),
    pytest.param(
        dict(attention_mask=ATTENTION_MASK[:1]), "attention_mask must have", id="mask-batch-1"
    ),
    pytest.param(
        dict(attention_mask=ATTENTION_MASK[..., None]), "attention_mask must have", id="mask-3d"
    ),
    pytest.param(
        dict(token_type_ids=np.zeros((B, T + 1), int)), "token_type_ids must have", id="token-types"
    ),
    pytest.param(dict(position_ids=POSITIONS[:, :-1]), "position_ids must have", id="positions"),
    pytest.param(
        dict(inputs_embeds=EMBEDS), "exactly one of input_ids and inputs_embeds", id="both"
    ),
    pytest.param(dict(input_ids=None), "exactly one of input_ids and inputs_embeds", id="neither"),
    pytest.param(
        dict(input_ids=None, inputs_embeds=EMBEDS[..., :31]),
        "inputs_embeds must be",
        id="embeds-wrong-D",
    ),
    pytest.param(
        dict(input_ids=None, inputs_embeds=EMBEDS[0]), "inputs_embeds must be", id="embeds-2d"
    ),
]


@pytest.mark.parametrize("kwargs, match", SHAPE_ERRORS)
def test_bad_shapes_raise_value_error(model, params, kwargs, match):
    kwargs = {"input_ids": INPUT_IDS, "attention_mask": ATTENTION_MASK, "lang_ids": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        model.apply({"params": params}, **kwargs)


def test_inputs_embeds_of_the_right_shape_are_accepted(run):
    out = run(input_ids=None, inputs_embeds=EMBEDS + 0.1, lang_ids=MIXED)
    assert out.last_hidden_state.shape == (B, T, 32)


def test_multiple_choice_wants_b_c_t():
    mc = xj.XmodForMultipleChoice(CONFIG)
    shapes = mc.param_shapes()  # abstract: no init, no compile

    def logits(input_ids, lang_ids):
        return jax.eval_shape(
            lambda p: mc.apply({"params": p}, input_ids=input_ids, lang_ids=lang_ids).logits,
            shapes,
        )

    assert logits(jnp.zeros((B, 3, T), jnp.int32), jnp.array(MIXED)).shape == (B, 3)
    with pytest.raises(ValueError, match=r"input_ids must be \[B, C, T\]"):
        logits(jnp.zeros((B, T), jnp.int32), jnp.array(MIXED))


def test_symbolic_shapes_are_checked_where_they_can_be(model):
    """jax.export's symbolic dimensions: any B and a T bounded by the position table pass; a T
    that may exceed the table is refused, naming the constraint to add, and one that must
    exceed it gets the length error."""
    shapes = model.param_shapes()

    def hidden(input_ids):
        return jax.eval_shape(
            lambda p, ids: model.apply({"params": p}, ids, lang_ids=0).last_hidden_state,
            shapes,
            jax.ShapeDtypeStruct(input_ids, jnp.int32),
        )

    b, t = jax.export.symbolic_shape("B, T", constraints=["T <= 38"])
    assert hidden((b, t)).shape == (b, t, 32)
    (u,) = jax.export.symbolic_shape("U")
    with pytest.raises(ValueError, match=r'may exceed .*constraints=\["U <= 38"\]'):
        hidden((2, u))
    (v,) = jax.export.symbolic_shape("V", constraints=["V >= 39"])
    with pytest.raises(ValueError, match="sequence length V exceeds this model's 38 positions"):
        hidden((2, v))
    with pytest.raises(ValueError, match=r"empty input: shape \[B, 0\]"):
        hidden((b, 0))


# ------------------------------------------------------------------------------ under jax.jit
@pytest.mark.parametrize(
    "bad",
    [
        3,
        100,
        -1,
    ],
)
def test_jit_out_of_range_lang_id_gives_nan_rows(jitted, bad):
    good_last, good_pool = jitted(INPUT_IDS, MIXED)
    last, pool = jitted(INPUT_IDS, [2, 0, bad, 0])
    assert np.isnan(last[2]).all() and np.isnan(pool[2]).all()
    keep = [0, 1, 3]
    assert np.isfinite(last[keep]).all() and np.isfinite(pool[keep]).all()
    np.testing.assert_allclose(last[keep], good_last[keep], rtol=0, atol=1e-6)
    np.testing.assert_allclose(pool[keep], good_pool[keep], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        99,
        5000,
        -1,
    ],
)
def test_jit_out_of_range_input_id_gives_nan_example(jitted, bad):
    good_last, good_pool = jitted(INPUT_IDS, MIXED)
    last, pool = jitted(_with(INPUT_IDS, (1, 2), bad), MIXED)
    assert np.isnan(last[1]).all() and np.isnan(pool[1]).all()
    keep = [0, 2, 3]
    np.testing.assert_allclose(last[keep], good_last[keep], rtol=0, atol=1e-6)
    np.testing.assert_allclose(pool[keep], good_pool[keep], rtol=0, atol=1e-6)


def test_jit_matches_eager_routing(jitted, explicit):
    last, pool = jitted(INPUT_IDS, MIXED)
    np.testing.assert_allclose(last, explicit(MIXED).last_hidden_state, rtol=0, atol=1e-5)
    np.testing.assert_allclose(pool, explicit(MIXED).pooler_output, rtol=0, atol=1e-5)


def test_jit_compiles_once_for_any_language_mix(model, params):
    def f(params, ids, lang_ids, mask):
        return model.apply(
            {"params": params}, input_ids=ids, lang_ids=lang_ids, attention_mask=mask
        ).last_hidden_state

    jf = jax.jit(f)
    mixes = [[2, 0, 1, 0], [0, 0, 0, 0], [1, 2, 2, 1]]
    with count_compiles() as compiles:
        outs = [jf(params, INPUT_IDS, np.array(m, np.int32), ATTENTION_MASK) for m in mixes]
    assert compiles["jit(f)"] == 1
    # the language mix is really used: rows whose language changed differ
    for b in range(B):
        assert float(jnp.max(jnp.abs(outs[0][b] - outs[2][b]))) > 1e-3


# ------------------------------------------------------------------------------------ warnings
def _pad_warnings(caplog):
    return [
        r
        for r in caplog.records
        if r.name == "xmod_jax" and r.levelno == logging.WARNING and "attention_mask" in r.message
    ]


def test_pad_without_attention_mask_warns_once_per_call(run, caplog):
    with caplog.at_level(logging.WARNING, logger="xmod_jax"):
        run(lang_ids=MIXED, attention_mask=None)
        assert len(_pad_warnings(caplog)) == 1
        run(lang_ids=MIXED, attention_mask=None)
        assert len(_pad_warnings(caplog)) == 2
    assert "pad token (1)" in _pad_warnings(caplog)[0].message


@pytest.mark.parametrize(
    "input_ids, attention_mask",
    [
        pytest.param(INPUT_IDS, ATTENTION_MASK, id="pads-with-mask"),
        pytest.param(INPUT_IDS[:1], None, id="no-pad-no-mask"),
    ],
)
def test_no_pad_warning(run, caplog, input_ids, attention_mask):
    assert (attention_mask is not None) or not (input_ids == 1).any()
    with caplog.at_level(logging.WARNING, logger="xmod_jax"):
        run(input_ids=input_ids, attention_mask=attention_mask, lang_ids=0)
    assert not [r for r in caplog.records if r.name == "xmod_jax"]


# ------------------------------------------------------------------------------------ checkify
N_LANGUAGES = CONFIG.num_languages


@pytest.fixture(scope="module")
def checked_forward(model, params):
    """The README recipe: a user check on lang_ids before model.apply, jitted and checkified."""

    def forward(params, input_ids, lang_ids, attention_mask):
        checkify.check(
            jnp.all((lang_ids >= 0) & (lang_ids < N_LANGUAGES)),
            "lang_ids out of range: {}",
            lang_ids,
        )
        return model.apply(
            {"params": params},
            input_ids=input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
        ).last_hidden_state

    checked = jax.jit(checkify.checkify(forward))
    return lambda langs: checked(params, INPUT_IDS, jnp.asarray(langs, jnp.int32), ATTENTION_MASK)


def test_checkify_user_check_passes_good_lang_ids(checked_forward, explicit):
    err, out = checked_forward(MIXED)
    assert err.get() is None
    err.throw()  # no error
    np.testing.assert_allclose(out, explicit(MIXED).last_hidden_state, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", [3, -1])
def test_checkify_user_check_catches_bad_lang_ids(checked_forward, bad):
    err, _ = checked_forward([2, 0, bad, 0])
    with pytest.raises(checkify.JaxRuntimeError, match="lang_ids out of range"):
        err.throw()


@pytest.fixture(scope="module", params=["index_checks", "nan_checks"])
def builtin_checked(request, model, params):
    """No user check: rely on checkify's automatic checks seeing the NaN-fill gather."""

    def forward(params, input_ids, lang_ids, attention_mask):
        return model.apply(
            {"params": params},
            input_ids=input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
        ).last_hidden_state

    errors = getattr(checkify, request.param)
    checked = jax.jit(checkify.checkify(forward, errors=errors))
    return lambda langs: checked(params, INPUT_IDS, jnp.asarray(langs, jnp.int32), ATTENTION_MASK)


def test_checkify_builtin_checks_pass_good_lang_ids(builtin_checked):
    err, _ = builtin_checked(MIXED)
    err.throw()


@pytest.mark.parametrize("bad", [3, -1])
def test_checkify_builtin_checks_catch_out_of_range_lang_ids(builtin_checked, bad):
    err, _ = builtin_checked([2, 0, bad, 0])
    with pytest.raises(checkify.JaxRuntimeError):
        err.throw()


# ------------------------------------------------------------------- parity with transformers
@pytest.fixture(scope="module")
def hf_pair():
    reference = hf_model("XmodModel")
    return (reference, *from_torch(reference))


@pytest.mark.parametrize(
    "lang_ids, torch_langs",
    [
        pytest.param(1, [1] * B, id="int"),
        pytest.param([2], [2] * B, id="list-[1]"),
        pytest.param(np.array([0], np.int64), [0] * B, id="np-[1]"),
        pytest.param(LANG_IDS.tolist(), LANG_IDS, id="list-[B]"),
        pytest.param(LANG_IDS.astype(np.int64), LANG_IDS, id="np-int64-[B]"),
        pytest.param(jnp.asarray(LANG_IDS[::-1].copy()), LANG_IDS[::-1].copy(), id="jnp-[B]"),
    ],
)
def test_lang_id_forms_match_transformers(hf_pair, lang_ids, torch_langs):
    reference, ours, ours_params = hf_pair
    theirs = run_hf(
        reference,
        input_ids=INPUT_IDS,
        attention_mask=ATTENTION_MASK,
        lang_ids=np.asarray(torch_langs, np.int64),
    )
    out = ours.apply(
        {"params": ours_params},
        input_ids=INPUT_IDS,
        attention_mask=ATTENTION_MASK,
        lang_ids=lang_ids,
    )
    assert_outputs_match(out, theirs, atol=1e-5)
