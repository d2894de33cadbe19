"""Loader: file formats, loading across heads, and a clear error for every bad checkpoint."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import (
    ATTENTION_MASK,
    INPUT_IDS,
    LANG_IDS,
    assert_outputs_match,
    hf_model,
    max_abs_diff,
    run_hf,
    torch,
)
from safetensors.numpy import load_file, save_file

import xmod_jax as xj

INPUTS = dict(input_ids=INPUT_IDS, lang_ids=LANG_IDS, attention_mask=ATTENTION_MASK)


@pytest.fixture(scope="module")
def mlm(checkpoint_dir):
    """A transformers XmodForMaskedLM and its saved folder."""
    reference = hf_model("XmodForMaskedLM")
    folder = checkpoint_dir("mlm")
    reference.save_pretrained(folder)
    return reference, folder


def _copy_with_state(src, dst, state=None, config_edit=None):
    """A checkpoint folder with src's config (optionally edited) and the given tensors."""
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    if config_edit:
        config.update(config_edit)
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f)
    if state is None:
        state = load_file(os.path.join(src, "model.safetensors"))
    save_file(state, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    return dst


# ------------------------------------------------------------------------------------ formats
def test_sharded_safetensors_load(mlm, checkpoint_dir):
    reference, _ = mlm
    folder = checkpoint_dir()
    reference.save_pretrained(folder, max_shard_size="20KB")
    assert os.path.exists(folder / "model.safetensors.index.json")
    assert len(list(folder.glob("model-*.safetensors"))) > 2
    model, params = xj.XmodForMaskedLM.from_pretrained(folder)
    assert_outputs_match(model.apply({"params": params}, **INPUTS), run_hf(reference, **INPUTS))


def test_legacy_pytorch_bin_loads(mlm, checkpoint_dir):
    reference, _ = mlm
    folder = checkpoint_dir()
    reference.config.save_pretrained(folder)
    state = dict(reference.state_dict())
    state["roberta.embeddings.position_ids"] = torch.arange(40)[None]  # 4.26-era buffer
    torch.save(state, folder / "pytorch_model.bin")
    model, params = xj.XmodForMaskedLM.from_pretrained(folder)
    assert_outputs_match(model.apply({"params": params}, **INPUTS), run_hf(reference, **INPUTS))


def test_safetensors_loading_never_imports_torch(mlm):
    _, folder = mlm
    code = (
        "import sys, numpy as np, xmod_jax as xj\n"
        f"model, params = xj.XmodForMaskedLM.from_pretrained({str(folder)!r})\n"
        "out = model.apply({'params': params}, np.array([[0, 5, 2]]), lang_ids=0)\n"
        "assert out.logits.shape == (1, 3, 99)\n"
        "leaked = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_param_dtype_casts_on_load(mlm):
    _, folder = mlm
    _, params = xj.XmodForMaskedLM.from_pretrained(folder, param_dtype="bfloat16")
    leaf = params["roberta"]["encoder"]["layer_0"]["output"]["adapter_modules"]["dense1"]["kernel"]
    assert leaf.dtype == np.dtype("bfloat16") and leaf.shape == (3, 32, 16)


# ------------------------------------------------------------------------- across heads
def test_encoder_from_masked_lm_checkpoint(mlm, caplog):
    """XmodModel from a MaskedLM file: prefix stripped, lm_head dropped, pooler initialised."""
    _, folder = mlm
    with caplog.at_level(logging.INFO, logger="xmod_jax"):
        model, params = xj.XmodModel.from_pretrained(folder)
    assert any("lm_head.dense.weight" in r.message for r in caplog.records)
    assert any("pooler" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    import transformers

    reference = transformers.XmodModel.from_pretrained(folder, attn_implementation="eager")
    ours = model.apply({"params": params}, **INPUTS, output_hidden_states=True)
    theirs = run_hf(reference.eval(), **INPUTS, output_hidden_states=True)
    assert max_abs_diff(ours.last_hidden_state, theirs["last_hidden_state"]) <= 1e-5
    assert max_abs_diff(ours.hidden_states, theirs["hidden_states"]) <= 1e-5


def test_masked_lm_from_bare_encoder_checkpoint(checkpoint_dir):
    """A file saved from XmodModel (no `roberta.` prefix) feeds the encoder of every head."""
    reference = hf_model("XmodModel")
    folder = checkpoint_dir()
    reference.save_pretrained(folder)
    model, params = xj.XmodForSequenceClassification.from_pretrained(folder, num_labels=4)
    assert model.config.num_labels == 4
    assert params["classifier"]["out_proj"]["kernel"].shape == (32, 4)
    ours = model.apply({"params": params}, **INPUTS, output_hidden_states=True)
    theirs = run_hf(reference, **INPUTS, output_hidden_states=True)
    assert max_abs_diff(ours.hidden_states, theirs["hidden_states"]) <= 1e-5


def test_classifier_from_masked_lm_initialises_the_head(mlm):
    _, folder = mlm
    model, params = xj.XmodForTokenClassification.from_pretrained(
        folder, id2label={0: "O", 1: "B-PER", 2: "I-PER"}, default_language="de_DE"
    )
    assert model.config.id2label == ("O", "B-PER", "I-PER")
    out = model.apply({"params": params}, INPUT_IDS, attention_mask=ATTENTION_MASK)
    assert out.logits.shape == (4, 8, 3) and np.isfinite(out.logits).all()


def test_head_shape_mismatch_raises_unless_ignored(checkpoint_dir):
    reference = hf_model("XmodForSequenceClassification", num_labels=3)
    folder = checkpoint_dir()
    reference.save_pretrained(folder)
    with pytest.raises(xj.CheckpointError) as err:
        xj.XmodForSequenceClassification.from_pretrained(folder, num_labels=5)
    message = str(err.value)
    assert "classifier.out_proj.weight: expected [5, 32], found [3, 32]" in message
    assert "ignore_mismatched_sizes" in message
    model, params = xj.XmodForSequenceClassification.from_pretrained(
        folder, num_labels=5, ignore_mismatched_sizes=True
    )
    kept = reference.classifier.dense.weight.detach().numpy().T
    np.testing.assert_array_equal(params["classifier"]["dense"]["kernel"], kept)
    assert params["classifier"]["out_proj"]["kernel"].shape == (32, 5)


def test_config_language_order_defines_lang_ids(mlm, checkpoint_dir):
    """Adapters stack in config.languages order, whatever the key order in the file."""
    _, src = mlm
    folder = _copy_with_state(
        src, checkpoint_dir(), config_edit={"languages": ["fr_XX", "en_XX", "de_DE"]}
    )
    import transformers

    reference = transformers.XmodForMaskedLM.from_pretrained(folder, attn_implementation="eager")
    model, params = xj.XmodForMaskedLM.from_pretrained(folder)
    assert_outputs_match(model.apply({"params": params}, **INPUTS), run_hf(reference, **INPUTS))


def test_decoder_bias_is_used_when_lm_head_bias_is_absent(mlm, checkpoint_dir):
    reference, src = mlm
    state = load_file(os.path.join(src, "model.safetensors"))
    state["lm_head.decoder.bias"] = state.pop("lm_head.bias")
    folder = _copy_with_state(src, checkpoint_dir(), state)
    model, params = xj.XmodForMaskedLM.from_pretrained(folder)
    assert_outputs_match(model.apply({"params": params}, **INPUTS), run_hf(reference, **INPUTS))


# ------------------------------------------------------------------------------- errors
def _state(src):
    return load_file(os.path.join(src, "model.safetensors"))


def test_missing_encoder_tensors_are_listed(mlm, checkpoint_dir):
    _, src = mlm
    state = _state(src)
    del state["roberta.encoder.layer.1.attention.self.key.weight"]
    del state["roberta.encoder.layer.0.output.adapter_modules.de_DE.dense2.bias"]
    folder = _copy_with_state(src, checkpoint_dir(), state)
    with pytest.raises(xj.CheckpointError, match="missing tensors") as err:
        xj.XmodForMaskedLM.from_pretrained(folder)
    assert "roberta.encoder.layer.1.attention.self.key.weight" in str(err.value)
    assert "roberta.encoder.layer.0.output.adapter_modules.de_DE.dense2.bias" in str(err.value)


def test_language_missing_from_file_is_reported(mlm, checkpoint_dir):
    _, src = mlm
    folder = _copy_with_state(
        src, checkpoint_dir(), config_edit={"languages": ["en_XX", "de_DE", "fr_XX", "sw_KE"]}
    )
    with pytest.raises(xj.CheckpointError) as err:
        xj.XmodForMaskedLM.from_pretrained(folder)
    assert "roberta.encoder.layer.0.output.adapter_modules.sw_KE.dense1.weight" in str(err.value)


def test_unexpected_and_misshaped_encoder_tensors_raise(mlm, checkpoint_dir):
    _, src = mlm
    state = _state(src)
    state["roberta.encoder.layer.0.attention.self.rotary.weight"] = np.zeros(3, np.float32)
    state["roberta.encoder.layer.1.intermediate.dense.weight"] = np.zeros((36, 32), np.float32)
    folder = _copy_with_state(src, checkpoint_dir(), state)
    with pytest.raises(xj.CheckpointError) as err:
        xj.XmodForMaskedLM.from_pretrained(folder, ignore_mismatched_sizes=True)
    message = str(err.value)
    assert "unexpected tensors" in message and "attention.self.rotary.weight" in message
    assert "intermediate.dense.weight: expected [37, 32], found [36, 32]" in message


def test_truncated_safetensors_raise_clearly(mlm, checkpoint_dir):
    _, src = mlm
    folder = _copy_with_state(src, checkpoint_dir())
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(xj.CheckpointError, match="corrupt or truncated"):
        xj.XmodForMaskedLM.from_pretrained(folder)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(xj.CheckpointError, match="corrupt or truncated"):
        xj.XmodForMaskedLM.from_pretrained(folder)


def test_truncated_torch_bin_raises_clearly(mlm, checkpoint_dir):
    reference, _ = mlm
    folder = checkpoint_dir()
    reference.config.save_pretrained(folder)
    path = folder / "pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(xj.CheckpointError, match="corrupt or truncated"):
        xj.XmodForMaskedLM.from_pretrained(folder)


def test_missing_files_and_wrong_checkpoints_raise(mlm, checkpoint_dir, tmp_path):
    _, src = mlm
    with pytest.raises(xj.CheckpointError, match="not a folder"):
        xj.XmodModel.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(xj.CheckpointError, match="no config.json"):
        xj.XmodModel.from_pretrained(tmp_path)
    no_weights = checkpoint_dir()
    (no_weights / "config.json").write_text((src / "config.json").read_text())
    with pytest.raises(xj.CheckpointError, match="no weights"):
        xj.XmodModel.from_pretrained(no_weights)
    bert = _copy_with_state(src, checkpoint_dir(), config_edit={"model_type": "bert"})
    with pytest.raises(xj.CheckpointError, match="model_type 'bert'"):
        xj.XmodModel.from_pretrained(bert)


def test_missing_shard_is_reported(mlm, checkpoint_dir):
    reference, _ = mlm
    folder = checkpoint_dir()
    reference.save_pretrained(folder, max_shard_size="20KB")
    victim = sorted(folder.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(xj.CheckpointError, match="shard files missing") as err:
        xj.XmodForMaskedLM.from_pretrained(folder)
    assert victim.name in str(err.value)


def test_safetensors_reader_agrees_with_the_safetensors_library(tmp_path):
    import ml_dtypes

    from xmod_jax.ckpts.weights import read_state_dict

    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.normal(size=(3, 5)).astype(np.float32),
        "f16": rng.normal(size=(7,)).astype(np.float16),
        "bf16": rng.normal(size=(2, 2, 3)).astype(ml_dtypes.bfloat16),
        "i64": np.arange(6, dtype=np.int64).reshape(1, 6),
        "flag": np.array([True, False]),
        "scalar": np.array(3.5, np.float64),
        "empty": np.zeros((0, 4), np.float32),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    theirs = load_file(tmp_path / "model.safetensors")
    ours = read_state_dict(str(tmp_path))
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        np.testing.assert_array_equal(ours[key], value)


@pytest.mark.parametrize(
    "damage",
    ["header-length", "header-json", "offsets-beyond-file", "offsets-wrong-size", "dtype"],
)
def test_damaged_safetensors_headers_are_refused(damage, mlm, checkpoint_dir):
    _, src = mlm
    folder = _copy_with_state(src, checkpoint_dir())
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    key = "lm_head.bias"
    if damage == "header-length":
        data[:8] = (len(data) + 1).to_bytes(8, "little")
    elif damage == "header-json":
        data[9:12] = b"}}}"
    else:
        if damage == "offsets-beyond-file":
            header[key]["data_offsets"] = [len(data), len(data) + 396]
        elif damage == "offsets-wrong-size":
            header[key]["data_offsets"][1] += 4
        else:
            header[key]["dtype"] = "F33"
        text = json.dumps(header).encode().ljust(size)
        data[8 : 8 + size] = text[:size] if len(text) > size else text
    path.write_bytes(bytes(data))
    with pytest.raises(xj.CheckpointError, match="corrupt or truncated"):
        xj.XmodForMaskedLM.from_pretrained(folder)
