"""Exported models (`xmod_jax.export`, `xmod-jax export`): one artifact for every batch size and
length up to the position table, the in-process model's outputs, NaN rows for bad lang ids, and a
fresh process that runs the file with jax and numpy alone.

References are the in-process modules jitted on concrete shapes (the code under test is the
export, not the model, whose parity with transformers is tested elsewhere).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LANGUAGES, random_params, tiny_config

import xmod_jax as xj
from xmod_jax import cli
from xmod_jax.export import export_model, load, runtime, save

RUNTIME = pathlib.Path(runtime.__file__)
VOCAB = 99
MAX_LENGTH = 64  # tiny_config: 66 positions, minus pad_token_id + 1
ALL_PLATFORMS = ("cpu", "cuda", "tpu")
CONFIG = dataclasses.replace(tiny_config(VOCAB), num_hidden_layers=1)  # half the compile time


@pytest.fixture(scope="module")
def mlm():
    """(model, params) of a tiny one-layer XmodForMaskedLM with 3 languages."""
    model = xj.XmodForMaskedLM(CONFIG)
    return model, random_params(model, scale=0.5)


@pytest.fixture(scope="module")
def files(mlm, tmp_path_factory) -> dict[str, pathlib.Path]:
    """The MLM exported for cpu, cuda and tpu, and its encoder's embed function for cpu, saved."""
    folder = tmp_path_factory.mktemp("exports")
    model, params = mlm
    paths = {"mlm": folder / "mlm.xmodexport", "embed": folder / "embed.xmodexport"}
    save(export_model(model, params, platforms=ALL_PLATFORMS), paths["mlm"])
    save(export_model(model, params, function="embed", platforms=["cpu"]), paths["embed"])
    return paths


@pytest.fixture(scope="module")
def loaded(files) -> dict[str, runtime.ExportedModel]:
    """The saved files loaded once, so that tests share their compilations."""
    return {name: load(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def reference(mlm):
    """The in-process model jitted on concrete shapes: (input_ids, attention_mask, lang_ids) ->
    (logits [B, T, V], last hidden state [B, T, D], its mean over the mask [B, D])."""
    model, params = mlm

    @jax.jit
    def forward(input_ids, attention_mask, lang_ids):
        kwargs = {"lang_ids": lang_ids, "attention_mask": attention_mask}
        logits = model.apply({"params": params}, input_ids, **kwargs).logits
        encoder = xj.XmodModel(model.config, add_pooling_layer=False)
        hidden = encoder.apply({"params": params["roberta"]}, input_ids, **kwargs)
        return logits, hidden.last_hidden_state

    def outputs(input_ids, attention_mask, lang_ids):
        logits, hidden = map(np.asarray, forward(input_ids, attention_mask, lang_ids))
        weights = attention_mask[..., None].astype(np.float64)  # [B, T, 1]
        return logits, hidden, (hidden * weights).sum(1) / weights.sum(1)

    return outputs


def batch(rows: int = 3, length: int = 11, seed: int = 0):
    """Padded int32 input_ids and attention_mask [rows, length], lang ids 0, 1, 2, 0, ... [rows].
    The default shape is the one most tests share (one compilation)."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(3, VOCAB, (rows, length)).astype(np.int32)
    input_ids[:, 0] = 0
    lengths = rng.integers(1, length + 1, rows)
    lengths[0] = length  # one full row
    attention_mask = (np.arange(length) < lengths[:, None]).astype(np.int32)
    input_ids[attention_mask == 0] = 1
    return input_ids, attention_mask, (np.arange(rows) % len(LANGUAGES)).astype(np.int32)


def assert_close(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("rows, length", [(1, 1), (3, 11), (2, MAX_LENGTH)])
def test_one_artifact_serves_any_batch_and_length(loaded, reference, rows, length):
    input_ids, attention_mask, lang_ids = batch(rows, length)
    logits = loaded["mlm"](input_ids, lang_ids, attention_mask)["logits"]
    assert logits.shape == (rows, length, VOCAB) and logits.dtype == jnp.float32
    assert_close(logits, reference(input_ids, attention_mask, lang_ids)[0])


def test_embed_function(loaded, reference):
    input_ids, attention_mask, lang_ids = batch()
    out = loaded["embed"](input_ids, lang_ids, attention_mask)
    _, hidden, pooled = reference(input_ids, attention_mask, lang_ids)
    assert_close(out["last_hidden_state"], hidden)
    assert_close(out["sentence_embedding"], pooled)


def test_header_describes_the_function(loaded):
    exported = loaded["mlm"]
    header = exported.header
    assert (header["format"], header["function"], header["model"]) == (
        runtime.FORMAT,
        "mlm",
        "XmodForMaskedLM",
    )
    assert exported.languages == LANGUAGES and exported.max_length == MAX_LENGTH
    assert header["outputs"] == {"logits": f"float32 [B, T, {VOCAB}]"}
    assert list(header["inputs"]) == ["params", *runtime.INPUTS]
    assert header["versions"]["jax"] == jax.__version__
    assert xj.XmodConfig.from_dict(header["config"]) == CONFIG
    assert exported.lang_ids(["fr_XX", "en_XX"]).tolist() == [2, 0]
    with pytest.raises(ValueError, match="unknown language 'xx_XX'; known: en_XX, de_DE, fr_XX"):
        exported.lang_ids("xx_XX")
    with pytest.raises(ValueError, match="pass lang_ids: this model has no default language"):
        exported(batch()[0])


def test_lengths_past_the_position_table_are_refused(loaded):
    exported = loaded["mlm"]
    input_ids, attention_mask, lang_ids = batch(2, MAX_LENGTH + 1)
    with pytest.raises(ValueError, match="sequence length 65 exceeds this export's 64 positions"):
        exported(input_ids, lang_ids, attention_mask)
    with pytest.raises(ValueError):  # the function's own shape constraint, without the wrapper
        exported.exported.call(exported.params, input_ids, attention_mask, lang_ids)
    with pytest.raises(
        ValueError, match=r"input_ids must be \[B, T\] with B, T >= 1, got \[2, 0\]"
    ):
        exported(input_ids[:, :0], lang_ids)


def test_bad_lang_ids_give_nan_rows(loaded, reference):
    """Out-of-range ids are not checked on the device: their rows are NaN, the others exact."""
    input_ids, attention_mask, lang_ids = batch()
    bad = np.array([lang_ids[0], 3, -1], np.int32)
    logits, hidden, pooled = reference(input_ids, attention_mask, lang_ids)
    out = {**loaded["mlm"](input_ids, bad, attention_mask), **loaded["embed"](input_ids, bad)}
    expected = {"logits": logits, "last_hidden_state": hidden, "sentence_embedding": pooled}
    for name, values in out.items():
        values = np.asarray(values)
        assert np.isnan(values[1:]).all(), name
        assert_close(values[0], expected[name][0])
    input_ids[0, 1] = 5000  # a token id past the vocabulary: that row too
    assert np.isnan(
        np.asarray(loaded["mlm"](input_ids, lang_ids, attention_mask)["logits"][0])
    ).all()


def test_a_fresh_process_runs_the_file_without_flax_or_the_models(loaded, files, tmp_path):
    """runtime.py loaded by path in a new interpreter: neither flax nor any xmod_jax module is
    imported, and the outputs equal this process's bit for bit."""
    input_ids, attention_mask, lang_ids = batch()
    np.savez(tmp_path / "inputs.npz", input_ids=input_ids, attention_mask=attention_mask)
    codes = [LANGUAGES[i] for i in lang_ids]
    script = f"""
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("xmod_export_runtime", {str(RUNTIME)!r})
runtime = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtime)
inputs = np.load({str(tmp_path / "inputs.npz")!r})
results = {{}}
for name, path in {json.dumps({k: str(v) for k, v in files.items()})}.items():
    model = runtime.load(path)
    out = model(inputs["input_ids"], model.lang_ids({codes!r}), inputs["attention_mask"])
    results.update({{f"{{name}}/{{k}}": np.asarray(v) for k, v in out.items()}})
np.savez({str(tmp_path / "outputs.npz")!r}, **results)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "xmod_jax"))))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []
    outputs = np.load(tmp_path / "outputs.npz")
    assert sorted(outputs) == ["embed/last_hidden_state", "embed/sentence_embedding", "mlm/logits"]
    for name, exported in loaded.items():
        for key, value in exported(input_ids, lang_ids, attention_mask).items():
            np.testing.assert_array_equal(outputs[f"{name}/{key}"], np.asarray(value))


def test_multi_platform_artifacts_serialize(mlm, loaded, tmp_path):
    exported = loaded["mlm"]
    assert exported.platforms == ALL_PLATFORMS
    assert exported.header["platforms"] == list(ALL_PLATFORMS)
    model, params = mlm
    save(export_model(model, params, platforms=["tpu"]), tmp_path / "tpu.xmodexport")
    with pytest.raises(ValueError, match="was exported for tpu; this process runs on cpu"):
        load(tmp_path / "tpu.xmodexport")
    with pytest.raises(ValueError, match="platforms must be distinct names among cpu, cuda"):
        export_model(model, params, platforms=["gpu"])


def test_bfloat16_params_round_trip(tmp_path):
    config = CONFIG
    model = xj.XmodModel(config, param_dtype=jnp.bfloat16, add_pooling_layer=False)
    params = random_params(model)
    save(export_model(model, params, platforms=["cpu"]), tmp_path / "bf16.xmodexport")
    exported = load(tmp_path / "bf16.xmodexport")
    assert {leaf.dtype for leaf in jax.tree.leaves(exported.params)} == {jnp.dtype(jnp.bfloat16)}
    jax.tree.map(np.testing.assert_array_equal, exported.params, jax.device_get(params))
    out = exported(*batch(2, 5)[::2])  # input_ids, lang_ids; no mask
    assert np.isfinite(np.asarray(out["sentence_embedding"])).all()


def test_corrupt_files_are_named(files, tmp_path):
    data = files["mlm"].read_bytes()
    (tmp_path / "short").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="short is truncated"):
        load(tmp_path / "short")
    (tmp_path / "other").write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(ValueError, match="other is not an xmod-jax export"):
        load(tmp_path / "other")


def test_cli_export(mlm, reference, tmp_path, capsys):
    model, params = mlm
    folder = tmp_path / "mlm"
    model.save_pretrained(folder, params)
    output = tmp_path / "cli.xmodexport"
    assert cli.main(["export", "--model", str(folder), "--output", str(output)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {output}: mlm of XmodForMaskedLM, ")
    assert "platforms cpu/cuda/tpu, batch any, length 1..64, 3 languages" in said
    input_ids, attention_mask, lang_ids = batch()
    logits = load(output)(input_ids, lang_ids, attention_mask)["logits"]
    assert_close(logits, reference(input_ids, attention_mask, lang_ids)[0])

    argv = ["export", "--model", str(folder), "--output", str(tmp_path / "embed.xmodexport")]
    assert cli.main([*argv, "--function", "embed", "--platforms", "cpu"]) == 0
    assert load(tmp_path / "embed.xmodexport").function == "embed"
    assert cli.main([*argv, "--platforms", "cpu,gpu"]) == 1
    assert "platforms must be distinct names among cpu, cuda, rocm, tpu" in capsys.readouterr().err
    bare = xj.XmodModel(CONFIG)
    bare.save_pretrained(tmp_path / "bare", random_params(bare))
    argv = ["export", "--model", str(tmp_path / "bare"), "--output", str(tmp_path / "x")]
    assert cli.main([*argv, "--function", "mlm"]) == 1
    assert "export --function mlm needs an XmodForMaskedLM checkpoint" in capsys.readouterr().err
