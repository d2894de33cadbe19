"""Saving: ours -> transformers gives the same outputs; HF -> ours -> HF is bit-identical."""

import os

import jax
import numpy as np
import pytest
from helpers import (
    ATTENTION_MASK,
    BASE_FLAGS,
    INPUT_IDS,
    LANG_IDS,
    LARGE_FLAGS,
    TINY,
    assert_outputs_match,
    hf_model,
    needs_torch,
    random_params,
    run_hf,
    transformers,
)
from safetensors import safe_open
from safetensors.numpy import load_file

import xmod_jax as xj
from xmod_jax.ckpts import weights
from xmod_jax.ckpts.mapping import params_to_hf
from xmod_jax.hub import SAFE_WEIGHTS_NAME

INPUTS = dict(input_ids=INPUT_IDS, lang_ids=LANG_IDS, attention_mask=ATTENTION_MASK)
CHOICE_INPUTS = dict(
    input_ids=INPUT_IDS[None, :3], lang_ids=np.array([1]), attention_mask=ATTENTION_MASK[None, :3]
)
CLASSES = [
    (xj.XmodModel, {}),
    (xj.XmodForMaskedLM, {}),
    (xj.XmodForSequenceClassification, {"num_labels": 3}),
    (xj.XmodForTokenClassification, {"num_labels": 4}),
    (xj.XmodForQuestionAnswering, {}),
    (xj.XmodForMultipleChoice, {}),
]


@needs_torch
@pytest.mark.parametrize("flags", [BASE_FLAGS, LARGE_FLAGS], ids=["base", "large-prenorm"])
@pytest.mark.parametrize("cls, extra", CLASSES, ids=[c.__name__ for c, _ in CLASSES])
def test_ours_saved_then_loaded_by_transformers(cls, extra, flags, checkpoint_dir):
    config = xj.XmodConfig(**TINY, **flags, **extra)
    model = cls(config)
    params = random_params(model)
    folder = checkpoint_dir()
    model.save_pretrained(folder, params)
    reference = getattr(transformers, cls.__name__).from_pretrained(
        folder, attn_implementation="eager"
    )
    inputs = CHOICE_INPUTS if cls is xj.XmodForMultipleChoice else INPUTS
    full = dict(output_hidden_states=True, output_attentions=True)
    ours = model.apply({"params": params}, **inputs, **full)
    assert_outputs_match(ours, run_hf(reference.eval(), **inputs, **full))


@pytest.mark.parametrize(
    "class_name, overrides",
    [
        ("XmodForMaskedLM", BASE_FLAGS),
        ("XmodForMaskedLM", {**LARGE_FLAGS, "tie_word_embeddings": False}),
        ("XmodModel", LARGE_FLAGS),
        ("XmodForMultipleChoice", BASE_FLAGS),
        ("XmodForSequenceClassification", {"num_labels": 3}),
        ("XmodForQuestionAnswering", {}),
        ("XmodForTokenClassification", {"num_labels": 2}),
    ],
)
def test_hf_to_ours_to_hf_is_bit_identical(class_name, overrides, checkpoint_dir):
    reference = hf_model(class_name, **overrides)
    source, target = checkpoint_dir(), checkpoint_dir()
    reference.save_pretrained(source)
    model, params = getattr(xj, class_name).from_pretrained(source)
    model.save_pretrained(target, params)
    original = load_file(os.path.join(source, "model.safetensors"))
    written = load_file(os.path.join(target, "model.safetensors"))
    assert set(written) == set(original)
    for key, tensor in original.items():
        assert written[key].dtype == tensor.dtype, key
        np.testing.assert_array_equal(written[key], tensor, err_msg=key)
    reloaded = transformers.XmodConfig.from_pretrained(target)
    assert reloaded.to_dict()["languages"] == TINY["languages"]
    assert reloaded.architectures == [class_name]


@needs_torch
@pytest.mark.parametrize("flags", [BASE_FLAGS, LARGE_FLAGS], ids=["base", "large-prenorm"])
@pytest.mark.parametrize("cls, extra", CLASSES, ids=[c.__name__ for c, _ in CLASSES])
def test_converted_key_set_equals_transformers_state_dict(cls, extra, flags):
    config = xj.XmodConfig(**TINY, **flags, **extra)
    model = cls(config)
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), model.param_shapes())
    state = params_to_hf(params, xj.logical_axes(model), config.languages)
    shapes = {key: tuple(tensor.shape) for key, tensor in state.items()}
    reference = getattr(transformers, cls.__name__)(
        transformers.XmodConfig(**TINY, **flags, **extra)
    )
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    for tied in ("lm_head.decoder.weight", "lm_head.decoder.bias"):
        expected.pop(tied, None)
    assert shapes == expected


@needs_torch
def test_bfloat16_params_are_saved_as_bfloat16(checkpoint_dir):
    config = xj.XmodConfig(**TINY)
    model = xj.XmodForMaskedLM(config, param_dtype="bfloat16")
    params = random_params(model)
    folder = checkpoint_dir()
    model.save_pretrained(folder, params)
    with safe_open(os.path.join(folder, "model.safetensors"), framework="np") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    reference = transformers.XmodForMaskedLM.from_pretrained(folder)
    assert reference.roberta.embeddings.word_embeddings.weight.dtype.is_floating_point
    _, reloaded = xj.XmodForMaskedLM.from_pretrained(folder, param_dtype="bfloat16")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reloaded), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_saving_params_of_another_model_is_refused(checkpoint_dir):
    config = xj.XmodConfig(**TINY)
    params = random_params(xj.XmodModel(config))
    with pytest.raises(ValueError, match="missing lm_head/bias") as err:
        xj.XmodForMaskedLM(config).save_pretrained(checkpoint_dir(), params)
    assert "unexpected embeddings/LayerNorm/bias" in str(err.value)
    small = xj.XmodConfig(**{**TINY, "languages": ["en_XX"]})
    with pytest.raises(ValueError, match=r"expected \[1, 32, 16\], found \[3, 32, 16\]"):
        xj.XmodModel(small).save_pretrained(checkpoint_dir(), params)


def test_crash_while_writing_leaves_the_previous_checkpoint(checkpoint_dir, monkeypatch):
    config = xj.XmodConfig(**TINY)
    model = xj.XmodForMaskedLM(config)
    params = random_params(model)
    folder = checkpoint_dir()
    model.save_pretrained(folder, params)
    before = (folder / "model.safetensors").read_bytes()

    written = []

    def crash(f, tensor):
        written.append(tensor.nbytes)
        if len(written) == 5:  # the process is interrupted after four tensors
            f.write(b"half a tensor")
            raise KeyboardInterrupt
        f.write(memoryview(tensor.reshape(-1).view(np.uint8)))

    monkeypatch.setattr(weights, "write_array", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(folder, random_params(model))
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    fresh = checkpoint_dir()
    written.clear()
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(fresh, params)
    with pytest.raises(xj.CheckpointError):  # nothing loadable was left behind
        xj.XmodForMaskedLM.from_pretrained(fresh)
    assert SAFE_WEIGHTS_NAME not in os.listdir(fresh)


def test_saved_files_get_the_usual_permissions(checkpoint_dir):
    model = xj.XmodModel(xj.XmodConfig(**TINY))
    folder = checkpoint_dir()
    model.save_pretrained(folder, random_params(model))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "model.safetensors"):
        assert os.stat(folder / name).st_mode & 0o777 == 0o666 & ~umask, name
