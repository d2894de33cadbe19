"""`XmodConfig` against transformers' `XmodConfig` (the oracle) and the issue's spec.

Reference values come from `transformers.XmodConfig` or are derived by hand; the code under test
only ever produces the value being checked.
"""

import dataclasses
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import needs_torch, transformers

from xmod_jax import CheckpointError, XmodConfig

HFConfig = transformers.XmodConfig if transformers else None

# The fields transformers' configuration_xmod.py declares itself (not the inherited ones).
XMOD_FIELDS = (
    [f.name for f in dataclasses.fields(HFConfig) if f.name in inspect.get_annotations(HFConfig)]
    if HFConfig
    else []
)
LABEL_FIELDS = ["num_labels", "id2label", "label2id", "problem_type"]

# Non-default values for every kind of field, valid for both implementations.
CUSTOM = dict(
    languages=["en_XX", "de_DE", "fr_XX"],
    default_language="de_DE",
    pre_norm=True,
    adapter_layer_norm=True,
    adapter_reuse_layer_norm=False,
    ln_before_adapter=False,
    adapter_reduction_factor=4,
    num_labels=3,
    id2label={0: "neg", 1: "neu", 2: "pos"},
    label2id={"neg": 0, "neu": 1, "pos": 2},
    problem_type="single_label_classification",
    classifier_dropout=0.2,
    layer_norm_eps=1e-5,
    tie_word_embeddings=False,
    vocab_size=1000,
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=128,
    hidden_act="gelu_new",
    max_position_embeddings=130,
    type_vocab_size=1,
    eos_token_id=[2, 5],
)


def _norm(value):
    """Compare lists and tuples alike, recursively."""
    if isinstance(value, list | tuple):
        return tuple(_norm(v) for v in value)
    return value


def _assert_matches_hf(ours, theirs):
    """Every X-MOD field and the label fields of `ours` equal the transformers config's."""
    for name in XMOD_FIELDS:
        assert _norm(getattr(ours, name)) == _norm(getattr(theirs, name)), name
    assert ours.num_labels == theirs.num_labels
    assert dict(enumerate(ours.id2label)) == theirs.id2label
    assert dict(ours.label2id) == theirs.label2id
    assert ours.problem_type == theirs.problem_type


def _assert_hf_equal(loaded, expected):
    """Two transformers configs agree on every X-MOD field and the label fields."""
    for name in [*XMOD_FIELDS, *LABEL_FIELDS]:
        assert _norm(getattr(loaded, name)) == _norm(getattr(expected, name)), name


def _write_config(folder, data):
    (folder / "config.json").write_text(json.dumps(data))


# ------------------------------------------------------------------------- fields and defaults
@needs_torch
def test_xmod_field_list_is_the_full_transformers_list():
    # Guards the filter used below: configuration_xmod.py declares 27 fields in 5.23.
    assert len(XMOD_FIELDS) == 27
    assert {"languages", "default_language", "pre_norm", "ln_before_adapter"} <= set(XMOD_FIELDS)


@needs_torch
def test_has_every_transformers_field_and_the_label_fields():
    ours = {f.name for f in dataclasses.fields(XmodConfig)}
    assert set(XMOD_FIELDS) <= ours
    assert set(LABEL_FIELDS) | {"classifier_dropout"} <= ours


@needs_torch
@pytest.mark.parametrize("name", XMOD_FIELDS)
def test_default_equals_transformers_default(name):
    assert _norm(getattr(XmodConfig(), name)) == _norm(getattr(HFConfig(), name))


@needs_torch
def test_default_label_fields_equal_transformers():
    _assert_matches_hf(XmodConfig(), HFConfig())


def test_languages_default_is_a_tuple():
    assert XmodConfig().languages == ("en_XX",)


# ----------------------------------------------------------------------------- normalisation
def test_languages_list_becomes_tuple():
    assert XmodConfig(languages=["en_XX", "de_DE"]).languages == ("en_XX", "de_DE")


def test_id2label_with_int_keys_becomes_tuple_by_id():
    config = XmodConfig(id2label={1: "b", 0: "a", 2: "c"})
    assert config.id2label == ("a", "b", "c")
    assert config.num_labels == 3


def test_id2label_with_str_keys_becomes_tuple_by_id():
    config = XmodConfig(id2label={"1": "pos", "0": "neg"})
    assert config.id2label == ("neg", "pos")
    assert config.label2id == (("neg", 0), ("pos", 1))


def test_label2id_dict_becomes_pairs():
    config = XmodConfig(id2label={0: "x", 1: "y"}, label2id={"y": 1, "x": 0})
    assert config.label2id == (("x", 0), ("y", 1))


def test_eos_token_id_list_becomes_tuple():
    assert XmodConfig(eos_token_id=[2, 7]).eos_token_id == (2, 7)


@needs_torch
def test_accepts_transformers_to_dict_output():
    theirs = HFConfig(**CUSTOM)
    _assert_matches_hf(XmodConfig(**theirs.to_dict()), theirs)


@needs_torch
def test_accepts_transformers_keyword_arguments():
    _assert_matches_hf(XmodConfig(**CUSTOM), HFConfig(**CUSTOM))


# ---------------------------------------------------------------------------------- hashing
def test_is_hashable_with_list_and_dict_arguments():
    hash(XmodConfig(**CUSTOM))


def test_equal_configs_hash_equal():
    a = XmodConfig(languages=["en_XX", "de_DE"], id2label={0: "a", 1: "b"}, eos_token_id=[2])
    b = XmodConfig(languages=("en_XX", "de_DE"), id2label={"0": "a", "1": "b"}, eos_token_id=(2,))
    assert a == b
    assert hash(a) == hash(b)


def test_usable_as_dict_key():
    table = {XmodConfig(languages=["en_XX", "de_DE"]): "two"}
    assert table[XmodConfig(languages=("en_XX", "de_DE"))] == "two"
    assert XmodConfig() not in table


def test_is_frozen():
    config = XmodConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 32


# ---------------------------------------------------------------------------- serialisation
def test_to_dict_writes_lists_and_string_label_keys():
    data = XmodConfig(**CUSTOM).to_dict()
    assert data["model_type"] == "xmod"
    assert data["languages"] == ["en_XX", "de_DE", "fr_XX"]
    assert data["eos_token_id"] == [2, 5]
    assert data["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    assert data["label2id"] == {"neg": 0, "neu": 1, "pos": 2}
    json.dumps(data)


@needs_torch
def test_save_pretrained_is_read_by_transformers(tmp_path):
    XmodConfig(**CUSTOM).save_pretrained(tmp_path)
    _assert_hf_equal(HFConfig.from_pretrained(tmp_path), HFConfig(**CUSTOM))


@needs_torch
def test_save_pretrained_is_read_by_autoconfig(tmp_path):
    XmodConfig(**CUSTOM).save_pretrained(tmp_path)
    loaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is HFConfig
    _assert_hf_equal(loaded, HFConfig(**CUSTOM))


@needs_torch
def test_save_pretrained_default_config_is_read_by_transformers(tmp_path):
    XmodConfig().save_pretrained(tmp_path)
    _assert_hf_equal(HFConfig.from_pretrained(tmp_path), HFConfig())


@needs_torch
def test_save_pretrained_writes_architectures(tmp_path):
    XmodConfig().save_pretrained(tmp_path, architectures=["XmodForMaskedLM"])
    assert HFConfig.from_pretrained(tmp_path).architectures == ["XmodForMaskedLM"]


@needs_torch
def test_loads_config_written_by_transformers(tmp_path):
    kwargs = dict(
        languages=["en_XX", "de_DE", "ro_RO"],
        default_language="ro_RO",
        pre_norm=True,
        adapter_layer_norm=True,
        num_labels=3,
        id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
        label2id={"contradiction": 0, "neutral": 1, "entailment": 2},
        problem_type="single_label_classification",
        classifier_dropout=0.2,
        layer_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    theirs = HFConfig(**kwargs)
    theirs.save_pretrained(tmp_path)
    ours = XmodConfig.from_pretrained(tmp_path)
    _assert_matches_hf(ours, theirs)
    assert ours.languages == ("en_XX", "de_DE", "ro_RO")
    assert ours.id2label == ("contradiction", "neutral", "entailment")


@needs_torch
def test_loads_default_config_written_by_transformers(tmp_path):
    HFConfig().save_pretrained(tmp_path)
    assert XmodConfig.from_pretrained(tmp_path) == XmodConfig()


@needs_torch
def test_from_pretrained_keyword_overrides_win(tmp_path):
    HFConfig(languages=["en_XX", "de_DE"]).save_pretrained(tmp_path)
    config = XmodConfig.from_pretrained(tmp_path, default_language="de_DE", pre_norm=True)
    assert config.default_language == "de_DE"
    assert config.pre_norm is True
    assert config.languages == ("en_XX", "de_DE")


@needs_torch
def test_from_pretrained_num_labels_override_replaces_saved_labels(tmp_path):
    HFConfig(id2label={0: "neg", 1: "pos"}).save_pretrained(tmp_path)
    theirs = HFConfig.from_pretrained(tmp_path, num_labels=5)
    ours = XmodConfig.from_pretrained(tmp_path, num_labels=5)
    _assert_matches_hf(ours, theirs)


# ----------------------------------------------------------------------- accepted metadata keys
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("architectures", ["XmodForMaskedLM"]),
        ("dtype", "float32"),
        ("torch_dtype", "bfloat16"),
        ("transformers_version", "4.27.0.dev0"),
        ("_name_or_path", "facebook/xmod-base"),
        ("return_dict", False),
        ("output_hidden_states", True),
        ("output_attentions", True),
        ("chunk_size_feed_forward", 0),
        ("use_cache", False),
        ("position_embedding_type", "absolute"),
        ("is_encoder_decoder", False),
        ("pruned_heads", {}),
        ("max_length", 20),
        ("num_beams", 1),
        ("model_type", "xmod"),
    ],
)
def test_metadata_key_is_accepted(key, value):
    config = XmodConfig(**{key: value})
    expected = XmodConfig(use_cache=False) if key == "use_cache" else XmodConfig()
    assert config == expected


# ------------------------------------------------------------------------ rejected values/keys
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(position_embedding_type="relative_key"), "position_embedding_type"),
        (dict(position_embedding_type="relative_key_query"), "position_embedding_type"),
        (dict(is_encoder_decoder=True), "is_encoder_decoder"),
        (dict(pruned_heads={"0": [1]}), "pruned_heads"),
        (dict(hidden_act="no_such_act"), "hidden_act"),
        (dict(hidden_size=30, num_attention_heads=4), "num_attention_heads"),
        (dict(embedding_size=128), "embedding_size"),
    ],
)
def test_unsupported_math_value_raises_naming_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        XmodConfig(**kwargs)


def test_unknown_key_raises_naming_it():
    with pytest.raises(ValueError, match="no_such_option"):
        XmodConfig(no_such_option=1)


def test_other_model_type_raises():
    with pytest.raises(ValueError, match="bert"):
        XmodConfig(model_type="bert")


# -------------------------------------------------------------------------------- languages
LANGS = ["en_XX", "de_DE", "fr_XX"]


def test_lang_ids_follow_languages_order():
    ids = XmodConfig(languages=LANGS).lang_ids(["fr_XX", "en_XX", "de_DE", "fr_XX"])
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [2, 0, 1, 2])


def test_lang_ids_of_two_codes():
    ids = XmodConfig(languages=LANGS).lang_ids(["en_XX", "de_DE"])
    assert ids.shape == (2,)
    np.testing.assert_array_equal(ids, [0, 1])


def test_lang_ids_of_one_string_is_0d():
    ids = XmodConfig(languages=LANGS).lang_ids("de_DE")
    assert isinstance(ids, np.ndarray)
    assert ids.shape == ()
    assert ids.dtype == np.int32
    assert int(ids) == 1


def test_lang_ids_unknown_code_lists_known_codes():
    with pytest.raises(ValueError, match="xx_YY") as info:
        XmodConfig(languages=LANGS).lang_ids(["en_XX", "xx_YY"])
    for code in LANGS:
        assert code in str(info.value)


def test_with_default_language_returns_new_config():
    config = XmodConfig(languages=LANGS)
    new = config.with_default_language("fr_XX")
    assert new.default_language == "fr_XX"
    assert config.default_language is None
    assert new.languages == config.languages
    assert new != config


def test_with_default_language_none_clears_it():
    config = XmodConfig(languages=LANGS, default_language="de_DE")
    assert config.with_default_language(None).default_language is None
    assert config.with_default_language(None) == XmodConfig(languages=LANGS)


def test_with_default_language_unknown_code_raises():
    with pytest.raises(ValueError, match="xx_YY"):
        XmodConfig(languages=LANGS).with_default_language("xx_YY")


def test_with_default_language_keeps_labels():
    config = XmodConfig(languages=LANGS, id2label={0: "a", 1: "b", 2: "c"})
    assert config.with_default_language("en_XX").id2label == ("a", "b", "c")


def test_default_language_not_in_languages_raises():
    with pytest.raises(ValueError, match="it_IT"):
        XmodConfig(languages=LANGS, default_language="it_IT")


def test_duplicate_languages_raise():
    with pytest.raises(ValueError, match="duplicate"):
        XmodConfig(languages=["en_XX", "de_DE", "en_XX"])


def test_add_cross_attention_without_is_decoder_raises():
    with pytest.raises(ValueError, match="is_decoder"):
        XmodConfig(add_cross_attention=True)


def test_add_cross_attention_with_is_decoder_is_accepted():
    config = XmodConfig(add_cross_attention=True, is_decoder=True)
    assert config.add_cross_attention and config.is_decoder


# ---------------------------------------------------------------------------------- labels
@needs_torch
@pytest.mark.parametrize("num_labels", [1, 3, 4])
def test_num_labels_makes_transformers_label_names(num_labels):
    _assert_matches_hf(XmodConfig(num_labels=num_labels), HFConfig(num_labels=num_labels))


def test_num_labels_4_gives_label_0_to_3():
    assert XmodConfig(num_labels=4).id2label == ("LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3")


@needs_torch
def test_with_labels_num_labels_3():
    config = XmodConfig(id2label={0: "a", 1: "b"})
    new = config.with_labels(num_labels=3)
    _assert_matches_hf(new, HFConfig(num_labels=3))
    assert config.id2label == ("a", "b")


def test_with_labels_id2label():
    new = XmodConfig().with_labels(id2label={"0": "x", "1": "y", "2": "z"})
    assert new.id2label == ("x", "y", "z")
    assert new.label2id == (("x", 0), ("y", 1), ("z", 2))
    assert new.num_labels == 3


@needs_torch
def test_single_label_classification_with_one_label_raises():
    kwargs = dict(problem_type="single_label_classification", num_labels=1)
    with pytest.raises(ValueError):
        HFConfig(**kwargs)  # the oracle raises too
    with pytest.raises(ValueError, match="num_labels"):
        XmodConfig(**kwargs)


def test_regression_with_one_label_is_accepted():
    config = XmodConfig(problem_type="regression", num_labels=1)
    assert config.num_labels == 1
    assert config.id2label == ("LABEL_0",)


def test_unknown_problem_type_raises():
    with pytest.raises(ValueError, match="problem_type"):
        XmodConfig(problem_type="ranking")


@needs_torch
def test_label2id_is_consistent_with_id2label():
    kwargs = dict(num_labels=3, label2id={"x": 0, "y": 1})
    try:
        config = XmodConfig(**kwargs)
    except ValueError:
        return  # refusing the inconsistent input is also fine
    assert dict(config.label2id) == {label: i for i, label in enumerate(config.id2label)}
    assert dict(config.label2id) == HFConfig(**kwargs).label2id


# -------------------------------------------------------------------------- from_pretrained
def test_from_pretrained_without_config_json_raises(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        XmodConfig.from_pretrained(tmp_path)


def test_from_pretrained_invalid_json_raises(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 64,')
    with pytest.raises(CheckpointError, match="JSON"):
        XmodConfig.from_pretrained(tmp_path)


def test_from_pretrained_json_not_an_object_raises(tmp_path):
    _write_config(tmp_path, ["xmod"])
    with pytest.raises(CheckpointError, match="object"):
        XmodConfig.from_pretrained(tmp_path)


def test_from_pretrained_bert_config_raises(tmp_path):
    _write_config(tmp_path, {"model_type": "bert", "hidden_size": 64})
    with pytest.raises(CheckpointError, match="bert"):
        XmodConfig.from_pretrained(tmp_path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


@needs_torch
def test_from_pretrained_old_style_config(tmp_path):
    # The shape of facebook/xmod-base's config.json (older transformers, torch_dtype etc.).
    data = {
        "architectures": ["XmodForMaskedLM"],
        "model_type": "xmod",
        "languages": ["en_XX", "de_DE"],
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 514,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": "4.27.0.dev0",
        "type_vocab_size": 1,
        "vocab_size": 250002,
    }
    _write_config(tmp_path, data)
    _assert_matches_hf(XmodConfig.from_pretrained(tmp_path), HFConfig.from_pretrained(tmp_path))


# ----------------------------------------------------------------------------- notebooks
def test_html_table_for_notebooks():
    config = XmodConfig(languages=["en_XX", "de_DE"], id2label={0: "<neg>", 1: "pos"})
    table = config._repr_html_()
    assert table.startswith("<table><caption>XmodConfig</caption>")
    assert (
        "<th style='text-align:left'>languages</th><td style='text-align:left'>2: en_XX, de_DE"
        in table
    )
    assert "head_dim, adapter_size</th><td style='text-align:left'>64, 384<" in table
    assert "&lt;neg&gt;" in table and "<neg>" not in table  # values are escaped
    for field in dataclasses.fields(XmodConfig):  # every field has its row, languages once
        assert table.count(f">{field.name}</th>") == 1


def test_importing_the_package_loads_nothing_for_notebooks_or_plots():
    code = (
        "import sys, xmod_jax; heavy = ('matplotlib', 'IPython', 'treescope', 'torch', "
        "'transformers', 'nbclient', 'ipywidgets'); print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
