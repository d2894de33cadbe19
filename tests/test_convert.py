"""Conversion CLIs (run in subprocesses), orbax folders, atomic writes, and hub names."""

import os
import pathlib
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
    run_hf,
    transformers,
)
from safetensors import safe_open
from safetensors.numpy import load_file

import xmod_jax as xj

ROOT = pathlib.Path(__file__).resolve().parents[1]
INPUTS = dict(input_ids=INPUT_IDS, lang_ids=LANG_IDS, attention_mask=ATTENTION_MASK)


def cli(script, *args, check=True):
    result = subprocess.run(
        [sys.executable, ROOT / "convert" / script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def source(checkpoint_dir):
    reference = hf_model("XmodForMaskedLM", pre_norm=True, adapter_layer_norm=True)
    folder = checkpoint_dir("hf")
    reference.save_pretrained(folder)
    return reference, folder


def test_hf_to_orbax_to_hf_is_bit_identical(source, tmp_path):
    reference, folder = source
    orbax, back = tmp_path / "orbax", tmp_path / "back"
    out = cli("hf_to_flax.py", folder, orbax)
    assert "XmodForMaskedLM" in out.stdout and "peak RSS" in out.stdout
    assert sorted(os.listdir(orbax)) == ["config.json", "params"]
    model, params = xj.XmodForMaskedLM.from_pretrained(orbax)  # the orbax layout loads too
    assert_outputs_match(model.apply({"params": params}, **INPUTS), run_hf(reference, **INPUTS))
    cli("flax_to_hf.py", orbax, back)
    original, written = (load_file(p / "model.safetensors") for p in (folder, back))
    assert set(written) == set(original)
    for key, tensor in original.items():
        assert written[key].dtype == tensor.dtype
        np.testing.assert_array_equal(written[key], tensor, err_msg=key)
    again = transformers.XmodForMaskedLM.from_pretrained(back, attn_implementation="eager")
    assert_outputs_match(model.apply({"params": params}, **INPUTS), run_hf(again.eval(), **INPUTS))


def test_bfloat16_conversion_keeps_bfloat16(source, tmp_path):
    _, folder = source
    orbax, back = tmp_path / "orbax16", tmp_path / "back16"
    out = cli("hf_to_flax.py", folder, orbax, "--dtype", "bfloat16")
    assert "bfloat16" in out.stdout
    _, params = xj.XmodForMaskedLM.from_pretrained(orbax, param_dtype="bfloat16")
    cli("flax_to_hf.py", orbax, back)
    with safe_open(back / "model.safetensors", framework="np") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
        kernel = f.get_tensor("roberta.encoder.layer.0.intermediate.dense.weight")
    np.testing.assert_array_equal(
        kernel.T, params["roberta"]["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
    )


def test_existing_destination_is_refused_unless_overwrite(source, tmp_path):
    _, folder = source
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("precious")
    refused = cli("hf_to_flax.py", folder, dst, check=False)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr
    assert (dst / "keep.txt").read_text() == "precious"
    cli("hf_to_flax.py", folder, dst, "--overwrite")
    assert sorted(os.listdir(dst)) == ["config.json", "params"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no leftovers


KILL_DURING = {
    "hf_to_flax": (
        "import os, signal, xmod_jax.ckpts.folders as c\n"
        "def killed(folder, params):\n"
        "    os.makedirs(os.path.join(folder, 'params'))\n"
        "    open(os.path.join(folder, 'params', 'half'), 'w').write('x')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "c.save_orbax_params = killed\n"
        "c.hf_to_flax({src!r}, {dst!r})\n"
    ),
    "flax_to_hf": (
        "import os, signal, xmod_jax.ckpts.weights as t, xmod_jax.ckpts.folders as c\n"
        "count = [0]\n"
        "def killed(f, tensor):\n"
        "    count[0] += 1\n"
        "    f.write(memoryview(tensor.reshape(-1).view('uint8')))\n"
        "    if count[0] == 7: f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "t.write_array = killed\n"
        "c.flax_to_hf({src!r}, {dst!r})\n"
    ),
}


@pytest.mark.parametrize("direction", KILL_DURING)
def test_killed_conversion_leaves_nothing_loadable(direction, source, tmp_path):
    _, folder = source
    src = folder
    if direction == "flax_to_hf":
        src = tmp_path / "orbax"
        cli("hf_to_flax.py", folder, src)
    dst = tmp_path / "dst"
    code = KILL_DURING[direction].format(src=str(src), dst=str(dst))
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    assert not dst.exists()
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".dst.tmp-")]
    assert leftovers  # the half-written temporary sibling is all that remains
    with pytest.raises(xj.CheckpointError):
        xj.XmodForMaskedLM.from_pretrained(dst)
    script = "hf_to_flax.py" if direction == "hf_to_flax" else "flax_to_hf.py"
    cli(script, src, dst)  # a rerun succeeds next to the leftovers, which loading ignores
    xj.XmodForMaskedLM.from_pretrained(dst)


def test_orbax_folder_loads_into_another_head(source, tmp_path):
    _, folder = source
    orbax = tmp_path / "orbax"
    cli("hf_to_flax.py", folder, orbax)
    model, params = xj.XmodModel.from_pretrained(orbax)
    reference = transformers.XmodModel.from_pretrained(folder, attn_implementation="eager")
    ours = model.apply({"params": params}, **INPUTS, output_hidden_states=True)
    theirs = run_hf(reference.eval(), **INPUTS, output_hidden_states=True)
    assert_outputs_match(ours, {"hidden_states": theirs["hidden_states"]})


def test_flax_to_hf_needs_an_orbax_folder(source, tmp_path):
    _, folder = source
    result = cli("flax_to_hf.py", folder, tmp_path / "x", check=False)
    assert result.returncode == 1 and "not an orbax folder" in result.stderr


# ------------------------------------------------------------------------------------ hub names
def test_hub_name_is_downloaded_with_huggingface_hub(source, monkeypatch):
    import huggingface_hub

    _, folder = source
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, allow_patterns))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model, _ = xj.XmodForMaskedLM.from_pretrained("facebook/xmod-tiny")
    assert calls[0][0] == "facebook/xmod-tiny"
    assert "config.json" in calls[0][1] and "*.safetensors" in calls[0][1]
    assert model.config.languages == ("en_XX", "de_DE", "fr_XX")


def test_hub_failures_give_one_line_errors(monkeypatch):
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nmore details")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(xj.CheckpointError) as err:
        xj.XmodModel.from_pretrained("facebook/xmod-base")
    assert "\n" not in str(err.value) and "ConnectionError" in str(err.value)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(xj.CheckpointError, match="pip install") as err:
        xj.XmodModel.from_pretrained("facebook/xmod-base")
    assert "\n" not in str(err.value)
