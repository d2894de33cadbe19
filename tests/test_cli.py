"""The `xmod-jax` console script, run in subprocesses as a user would (`python -m xmod_jax.cli`
when the package is not installed with its entry point).

Each subprocess pays the JAX import, so there are few; other paths call `cli.main` in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import LANGUAGES, random_params, tiny_config
from safetensors.numpy import load_file

import xmod_jax as xj
from xmod_jax import cli
from xmod_jax import pipelines as pl
from xmod_jax.ckpts.mapping import iter_leaves

SCRIPT = os.path.join(os.path.dirname(sys.executable), "xmod-jax")  # where pip puts it
COMMAND = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "xmod_jax.cli"]


def xmod_jax_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, match: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmod-jax: error: "), result.stderr
    assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def mlm_folder(tmp_path_factory, tokenizer):
    """A saved XmodForMaskedLM with its tokenizer -> (folder, model, params, tokenizer)."""
    folder = tmp_path_factory.mktemp("mlm")
    tokenizer.save_pretrained(folder)
    tok = xj.XmodTokenizer.from_pretrained(folder)
    model = xj.XmodForMaskedLM(tiny_config(tok.vocab_size))
    params = random_params(model, scale=0.5)
    model.save_pretrained(folder, params)
    return folder, model, params, tok


def test_info(mlm_folder):
    folder, model, params, _ = mlm_folder
    result = xmod_jax_cli("info", "--model", folder)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "model: XmodForMaskedLM" in out
    assert f"languages (3): {', '.join(LANGUAGES)}" in out
    sizes = {"/".join(path): int(np.size(x)) for path, x in iter_leaves(params)}
    adapters = sum(n for path, n in sizes.items() if "adapter_modules" in path)
    total = sum(sizes.values())
    assert f"{adapters:,}  ({adapters // 3:,} per language)" in out
    assert f"  {'total':<18} {total:>14,}  {4 * total:,} bytes float32" in out
    groups = cli.parameter_groups(params)
    assert set(groups) == {name for name, _ in cli.PARAM_GROUPS} | {"total"}  # no "other"
    assert groups["total"] == (total, 4 * total) and groups["layer norms"][0] > 0
    for name, (count, _) in groups.items():
        assert f"  {name:<18} {count:>14,}" in out


def test_fill_mask_from_stdin(mlm_folder):
    folder, model, params, tok = mlm_folder
    texts = ["the house is <mask>", "Paris is the <mask> of <mask>"]
    result = xmod_jax_cli(
        "fill-mask", "--model", folder, "--lang", "de_DE", "--top-k", "3", stdin="\n".join(texts)
    )
    assert result.returncode == 0, result.stderr
    expected = pl.fill_mask(model, params, tok, texts, "de_DE", top_k=3)
    lines = [f"{texts[0]}"]
    lines += [f"  mask 1  {r}. {t!r} {s:.4f}" for r, t, s in _ranked(expected[0][0])]
    lines += [f"{texts[1]}"]
    for m, prediction in enumerate(expected[1], start=1):
        lines += [f"  mask {m}  {r}. {t!r} {s:.4f}" for r, t, s in _ranked(prediction)]
    assert result.stdout.splitlines() == lines


def _ranked(prediction):
    return [(r, t, s) for r, (t, s) in enumerate(zip(*prediction[2:], strict=True), start=1)]


def test_embed_writes_the_pipelines_vectors(mlm_folder, tmp_path):
    folder, model, params, tok = mlm_folder
    texts = ["the house is green", "", "Die Straße über dem Fluss ist schön", "東京"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    output = tmp_path / "vectors.npy"
    result = xmod_jax_cli(
        "embed", "--model", folder, "--lang", "fr_XX", "--input", tmp_path / "texts.txt",
        "--output", output, "--normalize", "--batch-size", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {output}: 4 x 16 float32" in result.stdout
    vectors = np.load(output)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 16)
    expected = pl.embed(model, params, tok, texts, "fr_XX", normalize=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_convert_round_trip(mlm_folder, tmp_path):
    folder = mlm_folder[0]
    orbax, hf = tmp_path / "orbax", tmp_path / "hf"
    result = xmod_jax_cli("convert", "hf-to-flax", folder, orbax)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {orbax}: XmodForMaskedLM,")
    assert (orbax / "params").is_dir()
    result = xmod_jax_cli("convert", "flax-to-hf", orbax, hf)
    assert result.returncode == 0, result.stderr
    before, after = load_file(folder / "model.safetensors"), load_file(hf / "model.safetensors")
    assert sorted(before) == sorted(after)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert cli.main(["convert", "flax-to-hf", str(orbax), str(hf), "--no-progress"]) == 1


def test_unknown_language_is_one_line(mlm_folder):
    result = xmod_jax_cli("fill-mask", "--model", mlm_folder[0], "--lang", "xx_XX", "a <mask>")
    assert_one_line_error(result, "unknown language 'xx_XX'; known: en_XX, de_DE, fr_XX")


def test_missing_model_is_one_line(tmp_path):
    result = xmod_jax_cli("embed", "--model", tmp_path / "nope", "--output", "x.npy", "a")
    assert_one_line_error(result, "nope")


def test_empty_input_is_one_line(mlm_folder, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    result = xmod_jax_cli(
        "embed", "--model", mlm_folder[0], "--lang", "en_XX", "--input", tmp_path / "empty.txt",
        "--output", tmp_path / "x.npy",
    )  # fmt: skip
    assert_one_line_error(result, "no input texts")
    assert not (tmp_path / "x.npy").exists()


def test_errors_in_process(mlm_folder, tmp_path, capsys):
    folder = mlm_folder[0]
    bare = xj.XmodModel(tiny_config(302))
    bare.save_pretrained(tmp_path / "bare", random_params(bare, scale=0.5))
    assert cli.main(["fill-mask", "--model", str(tmp_path / "bare"), "--lang", "en_XX", "a"]) == 1
    assert "fill-mask needs an XmodForMaskedLM checkpoint" in capsys.readouterr().err
    assert cli.main(["fill-mask", "--model", str(folder), "a <mask>"]) == 1
    assert "pass --lang CODE; known: en_XX, de_DE, fr_XX" in capsys.readouterr().err
    args = ["embed", "--model", str(folder), "--lang", "en_XX", "--output", str(tmp_path / "x")]
    (tmp_path / "in.txt").write_text("a\n")
    assert cli.main([*args, "--input", str(tmp_path / "in.txt"), "text"]) == 1
    assert "not both" in capsys.readouterr().err
    assert cli.main([*args, "--input", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["fill-mask", "--lang", "en_XX", "--model"])  # --model without its value
    assert usage.value.code == 2
    assert "argument --model: expected one argument" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["info"], ["fill-mask"], ["embed", "--output", "x.npy"]])
def test_model_defaults_to_the_bundled_one(command):
    assert cli.build_parser().parse_args(command).model == xj.BUNDLED_MODEL
