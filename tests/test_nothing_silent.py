"""Nothing lost, nothing silent: dtype classes, configs that do not describe their arrays, cache
overflow, and the messages of two easy mistakes (bytes for text, a mistyped relative path)."""

import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY, hf_model, needs_torch, random_params, torch
from safetensors.numpy import load_file, save_file

import xmod_jax as xj
from xmod_jax.ckpts.mapping import dtype_class, hf_to_params
from xmod_jax.ckpts.orbax_params import load_orbax_params, save_orbax_params
from xmod_jax.nn.cache import write_at

KEY = "roberta.encoder.layer.0.attention.self.key.weight"
IDS = np.array([[0, 5, 6, 7, 8, 9, 10, 2], [0, 11, 12, 13, 14, 15, 16, 17]])


@pytest.fixture(scope="module")
def mlm(checkpoint_dir):
    """A transformers XmodForMaskedLM, its folder, and the orbax folder converted from it."""
    reference = hf_model("XmodForMaskedLM")
    folder = checkpoint_dir("mlm")
    reference.save_pretrained(folder)
    orbax = checkpoint_dir("orbax") / "model"
    xj.ckpts.hf_to_flax(str(folder), str(orbax), progress=False)
    return reference, folder, orbax


def _edited_copy(src, dst, state=None, **config_edit):
    shutil.copytree(src, dst)
    if state is not None:
        save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    if config_edit:
        config = json.loads((src / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**config, **config_edit}))
    return dst


def _leaf(params, dotted):
    for key in dotted.split("/"):
        params = params[key]
    return np.asarray(params)


# ------------------------------------------------------------------------------ dtype classes
def test_dtype_classes():
    import ml_dtypes

    floats = [np.float16, np.float32, np.float64, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn]
    assert {dtype_class(d) for d in floats} == {"floating"}
    assert {dtype_class(d) for d in (np.int8, np.int64, np.uint16, ml_dtypes.int4)} == {"integer"}
    assert dtype_class(np.bool_) == "bool" and dtype_class(np.complex64) == "complex"


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_or_bool_data_under_a_float_name_is_refused(dtype, mlm, tmp_path):
    _, src, _ = mlm
    state = load_file(src / "model.safetensors")
    state[KEY] = state[KEY].astype(dtype)  # same shape: only the dtype class is wrong
    folder = _edited_copy(src, tmp_path / "f", state)
    with pytest.raises(xj.CheckpointError, match="another dtype class") as err:
        xj.XmodForMaskedLM.from_pretrained(folder)
    assert f"{KEY}: {np.dtype(dtype)} data where a floating weight belongs" in str(err.value)


def test_integer_data_in_a_torch_bin_is_refused(mlm, tmp_path):
    reference, src, _ = mlm
    reference.config.save_pretrained(tmp_path)
    state = dict(reference.state_dict())
    state[KEY] = state[KEY].round().to(torch.int64)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(xj.CheckpointError, match=f"{KEY}: int64 data where a floating"):
        xj.XmodForMaskedLM.from_pretrained(tmp_path)


@needs_torch
@pytest.mark.parametrize("torch_dtype", ["float16", "bfloat16", "float64"])
def test_float_width_changes_load(torch_dtype, tmp_path):
    reference = hf_model("XmodForMaskedLM").to(getattr(torch, torch_dtype))
    reference.save_pretrained(tmp_path)
    _, params = xj.XmodForMaskedLM.from_pretrained(tmp_path)
    want = reference.state_dict()[KEY].float().numpy().T.reshape(32, 4, 8)
    got = _leaf(params, "roberta/encoder/layer_0/attention/self/key/kernel")
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_float_data_for_an_integer_leaf_is_reported():
    shapes, axes = {"table": {"embedding": (2, 3)}}, {"table": {"embedding": (None, None)}}
    state = {"table.weight": np.zeros((2, 3), np.float32)}
    result = hf_to_params(state, shapes, axes, (), dtypes={"table": {"embedding": np.int32}})
    assert result.mistyped == {("table", "embedding"): [("table.weight", "integer", np.float32)]}
    assert not result.params
    fitting = hf_to_params(state, shapes, axes, (), dtypes={"table": {"embedding": np.float16}})
    assert not fitting.mistyped and fitting.params["table"]["embedding"].shape == (2, 3)


@pytest.mark.parametrize("cls", ["XmodForMaskedLM", "XmodModel"])  # fast path, converting path
def test_integer_data_in_orbax_params_is_refused(cls, mlm, tmp_path):
    _, _, orbax = mlm
    params = load_orbax_params(str(orbax))
    kernel = params["roberta"]["encoder"]["layer_0"]["attention"]["self"]["key"]["kernel"]
    params["roberta"]["encoder"]["layer_0"]["attention"]["self"]["key"]["kernel"] = jnp.round(
        kernel
    ).astype(jnp.int32)
    save_orbax_params(str(tmp_path), params)
    shutil.copy(orbax / "config.json", tmp_path / "config.json")
    with pytest.raises(xj.CheckpointError) as err:
        getattr(xj, cls).from_pretrained(tmp_path)
    message = str(err.value)
    assert "roberta/encoder/layer_0/attention/self/key/kernel: int32 data" in message, message
    assert "floating weight" in message


# ------------------------------------------------------------------ config.json vs the arrays
LANGS = ["en_XX", "de_DE", "fr_XX"]
ORBAX_EDITS = {
    "one-more-language": (
        {"languages": [*LANGS, "sw_KE"]},
        [
            "adapter_modules/dense1/kernel: axis 0 (lang) holds 3 in the params",
            "config.json implies 4 (languages=[en_XX, de_DE, fr_XX, sw_KE] (4))",
        ],
    ),
    "one-language-less": (  # used to load silently, without the third adapter
        {"languages": LANGS[:2]},
        ["axis 0 (lang) holds 3 in the params, config.json implies 2 (languages=[en_XX, de_DE]"],
    ),
    "hidden-size": (
        {"hidden_size": 48},
        ["word_embeddings/embedding: axis 1 (embed) holds 32", "implies 48 (hidden_size=48)"],
    ),
    "vocab-size": (
        {"vocab_size": 100},
        [
            "word_embeddings/embedding: axis 0 (vocab) holds 99 in the params, config.json implies "
            "100 (vocab_size=100)"
        ],
    ),
    "fewer-layers": (  # used to raise a raw KeyError
        {"num_hidden_layers": 1},
        ["config.json has num_hidden_layers=1, the file holds layers [0, 1]", "layer_1/"],
    ),
    "more-layers": (
        {"num_hidden_layers": 3},
        ["num_hidden_layers=3, the file holds layers [0, 1]", "layer_2/"],
    ),
    "ffn-size": ({"intermediate_size": 36}, ["holds 37", "(intermediate_size=36)"]),
    "heads": ({"num_attention_heads": 8}, ["axis 1 (heads) holds 4", "num_attention_heads=8"]),
    "adapter-size": (
        {"adapter_reduction_factor": 4},
        ["(adapter) holds 16", "implies 8 (hidden_size=32, adapter_reduction_factor=4)"],
    ),
    "positions": ({"max_position_embeddings": 41}, ["max_position_embeddings=41", "holds 40"]),
    "token-types": ({"type_vocab_size": 1}, ["(type_vocab_size=1)"]),
    "adapter-layer-norm": (
        {"adapter_layer_norm": True},
        ["adapter_layer_norm/scale [32]: implied by config.json, absent from the params"],
    ),
}


@pytest.mark.parametrize("cls", ["XmodForMaskedLM", "XmodModel"])
@pytest.mark.parametrize("edit", ORBAX_EDITS, ids=ORBAX_EDITS)
def test_orbax_config_that_does_not_describe_the_params(edit, cls, mlm, tmp_path):
    """Leaf, config field and both sizes, for the model's own class and when converting."""
    _, _, orbax = mlm
    config_edit, expected = ORBAX_EDITS[edit]
    folder = _edited_copy(orbax, tmp_path / "f", **config_edit)
    with pytest.raises(xj.CheckpointError, match="does not describe the orbax params") as err:
        getattr(xj, cls).from_pretrained(folder)
    for text in expected:
        assert text in str(err.value), str(err.value)


SAFETENSORS_EDITS = {
    "vocab-size": (
        {"vocab_size": 100},
        "word_embeddings.weight: expected [100, 32], found [99, 32] (config.json: vocab_size=100)",
    ),
    "ffn-size": (
        {"intermediate_size": 36},
        "output.dense.weight: expected [32, 36], found [32, 37] "
        "(config.json: intermediate_size=36)",
    ),
    "adapter-size": (
        {"adapter_reduction_factor": 4},
        "dense1.weight: expected [8, 32], found [16, 32] "
        "(config.json: hidden_size=32, adapter_reduction_factor=4)",
    ),
    "positions": ({"max_position_embeddings": 41}, "(config.json: max_position_embeddings=41)"),
    "fewer-layers": ({"num_hidden_layers": 1}, "num_hidden_layers=1, the file holds layers [0, 1]"),
    "one-language-less": (
        {"languages": LANGS[:2]},
        "config.json has languages=[en_XX, de_DE] (2); the file has adapters of "
        "['de_DE', 'en_XX', 'fr_XX'] (not listed: ['fr_XX'])",
    ),
    "one-more-language": (
        {"languages": [*LANGS, "sw_KE"]},
        "(none for: ['sw_KE'])",
    ),
}


@pytest.mark.parametrize("edit", SAFETENSORS_EDITS, ids=SAFETENSORS_EDITS)
def test_safetensors_mismatch_names_the_config_field(edit, mlm, tmp_path):
    _, src, _ = mlm
    config_edit, expected = SAFETENSORS_EDITS[edit]
    folder = _edited_copy(src, tmp_path / "f", **config_edit)
    with pytest.raises(xj.CheckpointError) as err:
        xj.XmodForMaskedLM.from_pretrained(folder)
    assert expected in str(err.value), str(err.value)


def test_orbax_labels_override_still_follows_the_head_policy(checkpoint_dir, tmp_path):
    """The folder's config describes its arrays; a new `num_labels` is the usual head policy."""
    reference = hf_model("XmodForSequenceClassification", num_labels=3)
    src = checkpoint_dir()
    reference.save_pretrained(src)
    xj.ckpts.hf_to_flax(str(src), str(tmp_path / "o"), progress=False)
    with pytest.raises(xj.CheckpointError, match="ignore_mismatched_sizes"):
        xj.XmodForSequenceClassification.from_pretrained(tmp_path / "o", num_labels=5)
    _, params = xj.XmodForSequenceClassification.from_pretrained(
        tmp_path / "o", num_labels=5, ignore_mismatched_sizes=True
    )
    assert params["classifier"]["out_proj"]["kernel"].shape == (32, 5)


# ------------------------------------------------------------------------------ cache overflow
@pytest.fixture(scope="module", params=[False, True], ids=["unrolled", "scanned"])
def decoder(request):
    """(config, params, jitted step, scan_layers) of a one-layer causal LM."""
    config = xj.XmodConfig(**{**TINY, "num_hidden_layers": 1}, is_decoder=True)
    model = xj.XmodForCausalLM(config, scan_layers=request.param)
    step = jax.jit(
        lambda p, ids, cache: model.apply({"params": p}, ids, lang_ids=0, past_key_values=cache)
    )
    return config, random_params(model), step, request.param


def _assert_same_cache(after, before):
    for a, b in zip(jax.tree.leaves(after.layers), jax.tree.leaves(before.layers), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(after.key_mask), np.asarray(before.key_mask))


def test_cache_overflow_keeps_every_cached_position(decoder):
    """Under jit: NaN logits, the index advanced, every cached position as it was."""
    config, params, step, scan_layers = decoder
    cache = xj.init_cache(config, 2, 6, scan_layers=scan_layers)
    before = step(params, IDS[:, :4], cache).past_key_values  # 4 of 6 positions used
    assert bool(before.key_mask[:, 3].all()) and not bool(before.key_mask[:, 4:].any())
    over = step(params, IDS[:, 4:7], before)  # 3 more do not fit
    assert np.isnan(np.asarray(over.logits)).all()
    assert int(over.past_key_values.index) == 7  # the index still counts the call
    _assert_same_cache(over.past_key_values, before)
    again = step(params, IDS[:, 7:8], over.past_key_values)  # and stays poisoned
    assert np.isnan(np.asarray(again.logits)).all()
    _assert_same_cache(again.past_key_values, before)


def test_full_cache_one_more_token(decoder):
    config, params, step, scan_layers = decoder
    four = step(params, IDS[:, :4], xj.init_cache(config, 2, 6, scan_layers=scan_layers))
    full = step(params, IDS[:, 4:6], four.past_key_values)  # exactly fits: written as before
    assert np.isfinite(np.asarray(full.logits)).all()
    full = full.past_key_values
    assert int(full.index) == 6 and bool(full.key_mask.all())
    over = step(params, IDS[:, 6:7], full)  # the one-token step of a decode loop
    assert np.isnan(np.asarray(over.logits)).all()
    _assert_same_cache(over.past_key_values, full)


def test_write_at_drops_a_write_that_does_not_fit():
    cached = jnp.arange(6.0).reshape(1, 6)
    write = jax.jit(lambda c, n, i: write_at(c, n, i, 1))
    new = jnp.full((1, 2), -1.0)
    np.testing.assert_array_equal(write(cached, new, 4), [[0, 1, 2, 3, -1, -1]])
    for index in (5, 6, 9):  # dynamic_update_slice alone would write at 4 each time
        np.testing.assert_array_equal(write(cached, new, index), cached)


# --------------------------------------------------------------------------- small messages
def test_bytes_for_text_say_decode_first(tmp_path):
    from xmod_jax.text.tokenizer import as_text_batch

    for value, name in (
        (b"hello", "texts"),
        ([b"hello"], r"texts\[0\]"),
        (bytearray(b"x"), "texts"),
    ):
        with pytest.raises(TypeError, match=rf"{name} is (bytes|bytearray), not str: decode"):
            as_text_batch(value, "texts")


def test_bytes_for_text_through_the_tokenizer(tokenizer):
    with pytest.raises(TypeError, match=r"texts is bytes, not str: decode the bytes first"):
        tokenizer(b"hello world")
    with pytest.raises(TypeError, match=r"text_pair\[0\] is bytes"):
        tokenizer(["a"], [b"b"])


def test_missing_relative_folder_that_looks_like_a_hub_name(monkeypatch, tmp_path):
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nmore")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    for load in (xj.XmodModel.from_pretrained, xj.XmodTokenizer.from_pretrained):
        with pytest.raises(xj.CheckpointError) as err:
            load("checkpoints/mine")
        message = str(err.value)
        assert f"no local folder 'checkpoints/mine' (relative to {os.getcwd()})" in message
        assert "ConnectionError: Failed to resolve" in message and "\n" not in message
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(xj.CheckpointError, match="no local folder 'checkpoints/mine'.*pip install"):
        xj.XmodModel.from_pretrained("checkpoints/mine")
