"""Module API: plain-dict params, logical axes, dtypes, dropout, outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ATTENTION_MASK, INPUT_IDS, LANG_IDS, TINY, random_params

import xmod_jax as xj

CONFIG = xj.XmodConfig(**TINY)
ALL_CLASSES = [
    xj.XmodModel,
    xj.XmodForMaskedLM,
    xj.XmodForSequenceClassification,
    xj.XmodForMultipleChoice,
    xj.XmodForTokenClassification,
    xj.XmodForQuestionAnswering,
]


def _inputs(cls):
    if cls.has_choices:
        return dict(input_ids=INPUT_IDS[None], attention_mask=ATTENTION_MASK[None], lang_ids=[1])
    return dict(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, lang_ids=LANG_IDS)


def _assert_plain(tree):
    assert type(tree) is dict, type(tree)
    for value in tree.values():
        if isinstance(value, dict):
            _assert_plain(value)
        else:
            assert isinstance(value, jax.Array), type(value)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_params_are_plain_dicts_with_named_axes(cls):
    model = cls(CONFIG)
    params = model.init_params(0)
    _assert_plain(params)
    axes = xj.logical_axes(model)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    names = dict(jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: type(x) is tuple))
    assert len(names) == len(leaves)
    for path, leaf in leaves:
        axis_names = names[path]
        assert len(axis_names) == leaf.ndim, path
        assert set(axis_names) <= set(xj.AXIS_NAMES) | {None}
        keys = [p.key for p in path]
        assert ("lang" in axis_names) == ("adapter_modules" in keys), path
        if "lang" in axis_names:
            assert leaf.shape[axis_names.index("lang")] == CONFIG.num_languages


def test_init_follows_transformers_scheme():
    params = xj.XmodForMaskedLM(CONFIG).init_params(0)
    emb = params["roberta"]["embeddings"]
    np.testing.assert_array_equal(emb["word_embeddings"]["embedding"][CONFIG.pad_token_id], 0)
    np.testing.assert_array_equal(emb["position_embeddings"]["embedding"][CONFIG.pad_token_id], 0)
    np.testing.assert_array_equal(emb["LayerNorm"]["scale"], 1)
    np.testing.assert_array_equal(params["lm_head"]["bias"], 0)
    adapters = params["roberta"]["encoder"]["layer_0"]["output"]["adapter_modules"]
    kernel = adapters["dense1"]["kernel"]
    assert abs(float(jnp.std(kernel)) - CONFIG.initializer_range) < 0.003
    assert not np.allclose(kernel[0], kernel[1])  # each language drawn independently


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_optional_outputs_are_none_unless_requested(cls):
    model = cls(CONFIG)
    params = random_params(model)
    out = model.apply({"params": params}, **_inputs(cls))
    assert out.hidden_states is None and out.attentions is None
    full = model.apply(
        {"params": params}, **_inputs(cls), output_hidden_states=True, output_attentions=True
    )
    assert len(full.hidden_states) == CONFIG.num_hidden_layers + 1
    assert len(full.attentions) == CONFIG.num_hidden_layers
    if cls is xj.XmodModel:
        assert out.pooler_output.shape == (4, 32)
        no_pool = xj.XmodModel(CONFIG, add_pooling_layer=False)
        params = random_params(no_pool)
        assert "pooler" not in params
        assert no_pool.apply({"params": params}, **_inputs(cls)).pooler_output is None


def test_bfloat16_compute_keeps_statistics_and_logits_float32():
    fp32 = xj.XmodForMaskedLM(CONFIG)
    bf16 = xj.XmodForMaskedLM(CONFIG, dtype=jnp.bfloat16)
    params = random_params(fp32)
    kwargs = dict(**_inputs(xj.XmodForMaskedLM), output_hidden_states=True, output_attentions=True)
    ref = fp32.apply({"params": params}, **kwargs)
    out = bf16.apply({"params": params}, **kwargs)
    assert out.logits.dtype == jnp.float32
    assert out.attentions[0].dtype == jnp.float32
    assert out.hidden_states[-1].dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(ref.logits)))
    assert float(jnp.max(jnp.abs(out.logits - ref.logits))) < 0.05 * scale
    assert float(jnp.max(jnp.abs(out.attentions[0] - ref.attentions[0]))) < 0.02


def test_bfloat16_storage():
    model = xj.XmodModel(CONFIG, param_dtype=jnp.bfloat16)
    params = model.init_params(0)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    out = model.apply({"params": params}, **_inputs(xj.XmodModel))
    assert out.last_hidden_state.dtype == jnp.float32


def test_dropout_is_on_only_when_not_deterministic():
    model = xj.XmodForSequenceClassification(CONFIG)
    params = random_params(model)
    inputs = _inputs(xj.XmodForSequenceClassification)
    eval_logits = model.apply({"params": params}, **inputs).logits
    rng = {"dropout": jax.random.key(3)}
    train = model.apply({"params": params}, **inputs, deterministic=False, rngs=rng).logits
    again = model.apply({"params": params}, **inputs, deterministic=False, rngs=rng).logits
    np.testing.assert_array_equal(train, again)
    assert float(jnp.max(jnp.abs(train - eval_logits))) > 1e-3
    with pytest.raises(Exception, match="dropout"):
        model.apply({"params": params}, **inputs, deterministic=False)
    no_dropout = xj.XmodForSequenceClassification(
        xj.XmodConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    )
    train = no_dropout.apply({"params": params}, **inputs, deterministic=False, rngs=rng).logits
    np.testing.assert_allclose(train, eval_logits, atol=1e-6)


def test_question_answering_requires_two_labels():
    model = xj.XmodForQuestionAnswering(CONFIG.with_labels(num_labels=3))
    with pytest.raises(ValueError, match="num_labels=2"):
        model.init_params(0)
