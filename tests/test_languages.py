"""add_language / select_languages: existing languages stay bit-identical, on every head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ATTENTION_MASK, INPUT_IDS, TINY, random_params

import xmod_jax as xj

CONFIG = xj.XmodConfig(**TINY, adapter_layer_norm=True, default_language="de_DE")
CLASSES = [
    xj.XmodModel,
    xj.XmodForMaskedLM,
    xj.XmodForSequenceClassification,
    xj.XmodForTokenClassification,
    xj.XmodForQuestionAnswering,
    xj.XmodForMultipleChoice,
]


def _outputs(model, params, lang_ids):
    if model.has_choices:
        ids, mask = INPUT_IDS[None, :3], ATTENTION_MASK[None, :3]
        lang_ids = lang_ids[:1]
    else:
        ids, mask = INPUT_IDS, ATTENTION_MASK
    out = model.apply({"params": params}, ids, lang_ids=lang_ids, attention_mask=mask)
    return [np.asarray(x) for x in jax.tree.leaves(out)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_add_language_leaves_existing_languages_bit_identical(cls):
    model = cls(CONFIG)
    params = random_params(model)
    config, grown = xj.add_language(CONFIG, params, "sw_KE", rng=jax.random.key(1))
    assert config.languages == (*CONFIG.languages, "sw_KE") and config.lang_ids("sw_KE") == 3
    bigger = cls(config)
    for lang_ids in (np.array([0, 1, 2, 0]), np.array([2, 2, 1, 0])):
        _same(_outputs(model, params, lang_ids), _outputs(bigger, grown, lang_ids))
    encoder = grown.get("roberta", grown)["encoder"]
    kernel = encoder["layer_1"]["output"]["adapter_modules"]["dense1"]["kernel"]
    assert kernel.shape[0] == 4
    assert 0.01 < float(jnp.std(kernel[3])) < 0.03  # N(0, initializer_range), as transformers
    new = _outputs(bigger, grown, np.array([3, 3, 3, 3]))
    assert all(np.isfinite(x).all() for x in new)


def test_add_language_can_copy_an_existing_adapter():
    model = xj.XmodForMaskedLM(CONFIG)
    params = random_params(model)
    config, grown = xj.add_language(CONFIG, params, "de_CH", init_from="de_DE")
    bigger = xj.XmodForMaskedLM(config)
    _same(
        _outputs(bigger, grown, np.full(4, config.lang_ids("de_CH"))),
        _outputs(model, params, np.full(4, CONFIG.lang_ids("de_DE"))),
    )
    with pytest.raises(ValueError, match="already exists"):
        xj.add_language(config, grown, "de_CH")
    with pytest.raises(ValueError, match="unknown language"):
        xj.add_language(CONFIG, params, "it_IT", init_from="xx_XX")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_select_languages_keeps_chosen_rows_in_order(cls):
    model = cls(CONFIG)
    params = random_params(model)
    config, kept = xj.select_languages(CONFIG, params, ["fr_XX", "en_XX"])
    assert config.languages == ("fr_XX", "en_XX")
    assert config.default_language is None  # de_DE was dropped
    smaller = cls(config)
    _same(
        _outputs(smaller, kept, np.array([0, 1, 1, 0])),  # new ids: fr_XX=0, en_XX=1
        _outputs(model, params, np.array([2, 0, 0, 2])),
    )


def test_select_languages_keeps_a_surviving_default_and_refuses_bad_codes():
    params = random_params(xj.XmodModel(CONFIG))
    config, _ = xj.select_languages(CONFIG, params, ["de_DE"])
    assert config.default_language == "de_DE" and config.languages == ("de_DE",)
    with pytest.raises(ValueError, match="unknown language 'xx_XX'"):
        xj.select_languages(CONFIG, params, ["en_XX", "xx_XX"])
    with pytest.raises(ValueError, match="repeated"):
        xj.select_languages(CONFIG, params, ["en_XX", "en_XX"])


def test_select_languages_shrinks_xmod_base():
    """A 3-language deployment of xmod-base (81 languages): how much it saves, from shapes."""
    languages = [f"l{i}_XX" for i in range(81)]
    config = xj.XmodConfig(
        vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, languages=languages
    )
    shapes = xj.XmodModel(config, add_pooling_layer=False).param_shapes()
    selected = jax.eval_shape(lambda p: xj.select_languages(config, p, languages[:3])[1], shapes)
    before = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
    after = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(selected))
    per_language = (before - after) / 78
    assert per_language == 12 * (768 * 384 * 2 + 384 + 768)  # one adapter in each of 12 layers
    assert before - after > 5.5e8  # 553 M parameters, 2.2 GB in float32
