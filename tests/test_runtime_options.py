"""The runtime knobs: language routing strategies, fused attention, scan over layers, remat.

Every option must give the default's numbers (within 1e-6) and transformers' (within 1e-5).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    ATTENTION_MASK,
    INPUT_IDS,
    LANG_IDS,
    TINY,
    assert_outputs_match,
    from_torch,
    hf_model,
    max_abs_diff,
    random_params,
    run_hf,
)

import xmod_jax as xj
from xmod_jax.nn.layouts import is_scanned, stack_layers, unstack_layers

CONFIG = xj.XmodConfig(**TINY, pre_norm=True, adapter_layer_norm=True)
INPUTS = dict(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK)
ONE_LANGUAGE = np.full(4, 2)


@pytest.fixture(scope="module")
def reference():
    return hf_model("XmodForMaskedLM", pre_norm=True, adapter_layer_norm=True)


def _logits(model, params, lang_ids, **extra):
    out = model.apply({"params": params}, **INPUTS, lang_ids=lang_ids, **extra)
    return np.asarray(out.logits, np.float64)


# ----------------------------------------------------------------------------------- routing
@pytest.mark.parametrize("routing", ["gather", "auto", "ragged"])
def test_routing_strategies_match_transformers_on_mixed_batches(routing, reference):
    model, params = from_torch(reference, routing=routing)
    theirs = run_hf(reference, **INPUTS, lang_ids=LANG_IDS)
    assert_outputs_match(model.apply({"params": params}, **INPUTS, lang_ids=LANG_IDS), theirs)
    default = xj.XmodForMaskedLM(model.config)
    gathered = _logits(default, params, LANG_IDS)
    assert max_abs_diff(_logits(model, params, LANG_IDS), gathered) <= 1e-6


@pytest.mark.parametrize("routing", ["single", "auto", "ragged"])
def test_routing_strategies_agree_on_one_language_batches(routing, reference):
    model, params = from_torch(reference, routing=routing)
    default = xj.XmodForMaskedLM(model.config)
    assert (
        max_abs_diff(_logits(model, params, ONE_LANGUAGE), _logits(default, params, ONE_LANGUAGE))
        <= 1e-6
    )


def test_single_routing_never_answers_for_another_language(reference):
    model, params = from_torch(reference, routing="single")
    logits = _logits(model, params, np.array([2, 2, 0, 2]))
    assert np.isnan(logits[2]).all() and np.isfinite(logits[[0, 1, 3]]).all()


@pytest.mark.parametrize("routing", ["gather", "single", "auto", "ragged"])
def test_out_of_range_ids_give_nan_rows_in_every_strategy(routing):
    model = xj.XmodModel(CONFIG, routing=routing)
    params = random_params(model)
    forward = jax.jit(lambda p, lang: model.apply({"params": p}, **INPUTS, lang_ids=lang))
    out = np.asarray(forward(params, jnp.array([7, 7, 7, 7])).last_hidden_state)
    assert np.isnan(out).all()


def test_unknown_option_values_are_refused():
    for field in ("routing", "attention_impl", "remat"):
        with pytest.raises(ValueError, match=field):
            xj.XmodModel(CONFIG, **{field: "fastest"})


# --------------------------------------------------------------------------------- attention
def test_fused_and_explicit_attention_agree(reference):
    fused, params = from_torch(reference)
    explicit = fused.clone(attention_impl="explicit")
    assert fused.attention_impl == "fused"
    assert (
        max_abs_diff(_logits(fused, params, LANG_IDS), _logits(explicit, params, LANG_IDS)) <= 1e-6
    )
    theirs = run_hf(reference, **INPUTS, lang_ids=LANG_IDS, output_attentions=True)
    # probabilities come from the explicit path, whatever the setting
    out = fused.apply({"params": params}, **INPUTS, lang_ids=LANG_IDS, output_attentions=True)
    assert_outputs_match(out, theirs)


def test_fused_attention_runs_unless_probabilities_are_needed(monkeypatch):
    calls = []
    fused = jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    rng = {"dropout": jax.random.key(0)}

    def count(config, **kwargs):
        model = xj.XmodModel(config)
        params = random_params(model)
        calls.clear()
        model.apply({"params": params}, **INPUTS, lang_ids=0, **kwargs)
        return len(calls)

    layers = CONFIG.num_hidden_layers
    assert count(CONFIG) == layers
    assert count(CONFIG, output_attentions=True) == 0
    assert count(CONFIG, deterministic=False, rngs=rng) == 0  # attention dropout: explicit
    no_attention_dropout = xj.XmodConfig(**TINY, attention_probs_dropout_prob=0.0)
    assert count(no_attention_dropout, deterministic=False, rngs=rng) == layers


# ------------------------------------------------------------------------------------- scan
def test_scanned_layout_round_trips_and_matches_unrolled():
    model = xj.XmodForMaskedLM(CONFIG)
    params = random_params(model)
    scanned_model = model.clone(scan_layers=True)
    stacked = stack_layers(params)
    assert is_scanned(stacked) and not is_scanned(params)
    shapes = jax.tree.map(lambda s: s.shape, scanned_model.param_shapes())
    assert jax.tree.map(jnp.shape, stacked) == shapes
    for a, b in zip(jax.tree.leaves(unstack_layers(stacked)), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    axes = xj.logical_axes(scanned_model)["roberta"]["encoder"]["layer"]
    assert axes["output"]["adapter_modules"]["dense1"]["kernel"] == (
        "layers",
        "lang",
        "embed",
        "adapter",
    )
    full = dict(output_hidden_states=True, output_attentions=True)
    a = model.apply({"params": params}, **INPUTS, lang_ids=LANG_IDS, **full)
    for remat in ("none", "full", "dots"):
        b = scanned_model.clone(remat=remat).apply(
            {"params": stacked}, **INPUTS, lang_ids=LANG_IDS, **full
        )
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            assert float(jnp.max(jnp.abs(x - y))) <= 1e-6


def test_scan_keeps_the_program_size_flat_as_depth_grows():
    def equations(layers, scan):
        config = xj.XmodConfig(**{**TINY, "num_hidden_layers": layers})
        model = xj.XmodModel(config, scan_layers=scan)
        shapes = model.param_shapes()
        jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, **INPUTS, lang_ids=LANG_IDS))(
            shapes
        )
        return len(str(jaxpr).splitlines())

    assert equations(2, True) == equations(6, True)
    assert equations(6, False) > 2 * equations(2, False)


def test_scanned_models_load_save_and_match_transformers(reference, tmp_path):
    folder = tmp_path / "hf"
    reference.save_pretrained(folder)
    model, params = xj.XmodForMaskedLM.from_pretrained(folder, scan_layers=True)
    assert is_scanned(params)
    assert_outputs_match(
        model.apply({"params": params}, **INPUTS, lang_ids=LANG_IDS),
        run_hf(reference, **INPUTS, lang_ids=LANG_IDS),
    )
    model.save_pretrained(tmp_path / "saved", params)  # written unrolled, as transformers wants
    _, again = xj.XmodForMaskedLM.from_pretrained(tmp_path / "saved")
    for a, b in zip(jax.tree.leaves(unstack_layers(params)), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_scanned_decoder_cache_and_cross_attention():
    hf = hf_model("XmodForCausalLM", is_decoder=True, add_cross_attention=True)
    model, params = from_torch(hf, scan_layers=True)
    memory = np.random.default_rng(0).normal(size=(4, 5, 32)).astype(np.float32)
    ids = INPUT_IDS[:, :6]
    full = model.apply({"params": params}, ids, lang_ids=LANG_IDS, encoder_hidden_states=memory)
    theirs = run_hf(hf, input_ids=ids, lang_ids=LANG_IDS, encoder_hidden_states=memory)
    assert max_abs_diff(full.logits, theirs["logits"]) <= 1e-5
    cache = xj.init_cache(model.config, 4, 6)
    out = model.apply(
        {"params": params},
        ids[:, :3],
        lang_ids=LANG_IDS,
        past_key_values=cache,
        encoder_hidden_states=memory,
    )
    steps = [out.logits]
    for t in range(3, 6):
        out = model.apply(
            {"params": params},
            ids[:, t : t + 1],
            lang_ids=LANG_IDS,
            past_key_values=out.past_key_values,
        )
        steps.append(out.logits)
    cached = np.concatenate([np.asarray(s) for s in steps], axis=1)
    assert max_abs_diff(cached, np.asarray(full.logits, np.float64)) <= 1e-5


def test_freezing_and_languages_work_on_the_scanned_layout():
    model = xj.XmodForSequenceClassification(CONFIG, scan_layers=True)
    params = stack_layers(random_params(xj.XmodForSequenceClassification(CONFIG)))
    labels = xj.freeze_labels(params, "xmod_paper")
    layer = labels["roberta"]["encoder"]["layer"]
    assert set(jax.tree.leaves(layer["output"]["adapter_modules"])) == {"frozen"}
    assert set(jax.tree.leaves(layer["attention"])) == {"trainable"}
    freeze = ("new_language", "de_DE")
    tx = xj.make_optimizer(params, learning_rate=1e-2, freeze=freeze, config=CONFIG)
    step = xj.make_train_step(model, tx, xj.freeze_labels(params, freeze, CONFIG))
    state = xj.TrainState.create(jax.tree.map(jnp.copy, params), tx)
    batch = {**INPUTS, "lang_ids": np.ones(4, np.int32), "labels": np.array([0, 1, 1, 0])}
    state, _ = step(state, batch)
    kernel = "roberta/encoder/layer/output/adapter_modules/dense1/kernel".split("/")
    old, new = params, state.params
    for key in kernel:
        old, new = old[key], new[key]
    np.testing.assert_array_equal(old[:, [0, 2]], new[:, [0, 2]])  # [layers, lang, ...]
    assert not np.array_equal(old[:, 1], new[:, 1])

    config, kept = xj.select_languages(CONFIG, params, ["fr_XX", "en_XX"])
    small = xj.XmodForSequenceClassification(config, scan_layers=True)
    before = model.apply({"params": params}, **INPUTS, lang_ids=[2, 0, 0, 2]).logits
    after = small.apply({"params": kept}, **INPUTS, lang_ids=[0, 1, 1, 0]).logits
    np.testing.assert_array_equal(before, after)
    config, grown = xj.add_language(CONFIG, params, "sw_KE")
    bigger = xj.XmodForSequenceClassification(config, scan_layers=True)
    np.testing.assert_array_equal(
        bigger.apply({"params": grown}, **INPUTS, lang_ids=LANG_IDS).logits,
        model.apply({"params": params}, **INPUTS, lang_ids=LANG_IDS).logits,
    )
