"""The README's Python snippets run as written (on tiny models with the real vocabulary size)."""

import os
import pathlib
import re

import pytest
from helpers import random_params

import xmod_jax as xj
from xmod_jax.export import runtime

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
# facebook/xmod-base's config, shrunk in width and depth
TINY_BASE = dict(
    vocab_size=250002,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    languages=["de_DE", "en_XX", "sw_KE"],
)


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _saved(cls, config, folder):
    model = cls(config)
    model.save_pretrained(folder, random_params(model))  # no `init` to compile
    return folder


@pytest.fixture(scope="module")
def tiny_xmod_base(tmp_path_factory):
    config = xj.XmodConfig(**TINY_BASE)
    return _saved(xj.XmodForMaskedLM, config, tmp_path_factory.mktemp("xmod-base-like"))


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    config = xj.XmodConfig(**TINY_BASE, is_decoder=True)
    return _saved(xj.XmodForCausalLM, config, tmp_path_factory.mktemp("decoder"))


def test_readme_snippets_run(tiny_xmod_base, tiny_decoder, tmp_path, monkeypatch):
    blocks = _python_blocks()
    usage = next(b for b in blocks if "my-xmod-classifier" in b)
    recipe = next(b for b in blocks if "checkify" in b)
    decoding = next(b for b in blocks if "xj.generate" in b)
    finetuning = next(b for b in blocks if "make_train_step" in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(usage.replace("path/to/xmod-base", str(tiny_xmod_base)), namespace)
    assert namespace["out"].logits.shape == (2, 5, 250002)
    assert os.path.exists(tmp_path / "my-xmod-classifier" / "model.safetensors")
    exec(recipe, namespace)  # valid ids: err.throw() passes
    namespace["lang_ids"] = namespace["lang_ids"] + 5
    with pytest.raises(Exception, match="lang_ids out of range"):
        exec(recipe, namespace)
    exec(finetuning.replace("path/to/xmod-base", str(tiny_xmod_base)), namespace)
    assert int(namespace["state"].step) == 1 and 0 <= float(namespace["german"]["accuracy"]) <= 1
    exec(decoding.replace("path/to/decoder", str(tiny_decoder)), namespace)
    assert namespace["tokens"].shape == (1, 12) and namespace["sampled"].shape == (1, 12)
    assert int(namespace["out"].past_key_values.index) == 12


def test_readme_export_snippets_run(tiny_xmod_base, tmp_path, monkeypatch):
    blocks = _python_blocks()
    exporting = next(b for b in blocks if "export_model(" in b)
    by_path = next(b for b in blocks if "spec_from_file_location" in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(exporting.replace("path/to/xmod-base", str(tiny_xmod_base)), namespace)
    assert namespace["out"]["logits"].shape == (2, 5, 250002)
    exec(by_path.replace("path/to/runtime.py", runtime.__file__), namespace)
    assert namespace["runtime"].__name__ == "xmod_runtime"
    assert namespace["exported"].function == "mlm" and namespace["exported"].max_length == 512


def test_bundled_model_snippet_runs_as_written():
    bundled = next(b for b in _python_blocks() if "BUNDLED_MODEL" in b)
    namespace = {}
    exec(bundled, namespace)
    model, tok, clf = namespace["model"], namespace["tok"], namespace["clf"]
    assert len(model.config.languages) == 16 and tok.vocab_size == model.config.vocab_size
    assert clf.config.num_labels == 10
    assert os.path.isfile(os.path.join(namespace["folder"], "model.safetensors"))


def test_transfer_snippet_runs():
    """The zero-shot transfer snippet, on the bundled model and task (2 training steps)."""
    block = next(b for b in _python_blocks() if "finetune_classifier(" in b)
    namespace = {}
    exec(block.replace("steps=300", "steps=2"), namespace)
    assert sorted(namespace["own"]) == sorted(
        int(i) for i in namespace["config"].lang_ids(["da_DK", "de_DE", "en_XX", "fr_XX", "it_IT"])
    )
    assert namespace["english"].shape == (484,)
