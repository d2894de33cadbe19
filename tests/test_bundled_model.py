"""The model shipped inside the package, "xmod-jax/mini-debian": every documented way to load
it, what its folder holds, and transformers reading the same folder to the same numbers.

Nothing here depends on how well the model is trained (its model card measures that,
`examples/model_card.py`), and no output is written down: every expected value comes from
another entry point or from transformers. Any X-MOD of the documented shape saved in the
package folder passes.
"""

from __future__ import annotations

import os
import pathlib
import re

import jax
import numpy as np
import pytest
from helpers import needs_torch, torch, transformers
from safetensors import safe_open
from test_cli import xmod_jax_cli
from test_corpus_build import build as corpus_build

import xmod_jax as xj
from xmod_jax import cli, hub
from xmod_jax import pipelines as pl
from xmod_jax.ckpts.mapping import iter_leaves

ROOT = pathlib.Path(__file__).resolve().parents[1]
LANGUAGES = (  # the 16 with at least 1 M characters of training text in the corpus
    "cs_CZ da_DK de_DE en_XX es_XX fr_XX it_IT ja_XX pl_PL pt_XX ru_RU sk_SK tr_TR uk_UA zh_CN "
    "zh_TW"
).split()
MAX_BYTES = 30 * 2**20  # the whole folder, model card included
TEXTS = {  # package-description sentences in six scripts, CJK included
    "en_XX": "This package contains the development files for the library.",
    "de_DE": "Dieses Paket enthält die Dokumentation für das Programm – „ohne Gewähr“.",
    "ru_RU": "Этот пакет содержит заголовочные файлы для разработки.",
    "ja_XX": "本パッケージには、GIMP 用のドキュメントファイルが含まれています。",
    "zh_CN": "该软件包包含该库的开发文件。",
    "zh_TW": "這個套件提供程式庫的開發檔案。",
    "uk_UA": "Цей пакунок містить файли для розробки бібліотеки.",
    "pl_PL": "Ten pakiet zawiera pliki nagłówkowe biblioteki – „łączność”.",
}
MASKED = [text.replace(word, "<mask>", 1) for text, word in zip(TEXTS.values(), (
    "files", "Dokumentation", "файлы", "ドキュメント", "文件", "檔案", "файли", "pliki",
), strict=True)]  # fmt: skip


@pytest.fixture(scope="module")
def bundled():
    """(model, params, tokenizer), loaded by name."""
    model, params = xj.XmodForMaskedLM.from_pretrained(xj.BUNDLED_MODEL)
    return model, params, xj.XmodTokenizer.from_pretrained(xj.BUNDLED_MODEL)


def test_the_name_is_the_package_folder(bundled):
    model, params, tokenizer = bundled
    folder = hub.bundled_folder()
    assert os.path.samefile(folder, pathlib.Path(xj.__file__).parent / "models" / "mini-debian")
    by_path, path_params = xj.XmodForMaskedLM.from_pretrained(folder)
    assert by_path.config == model.config == xj.XmodConfig.from_pretrained(xj.BUNDLED_MODEL)
    assert jax.tree.all(jax.tree.map(np.array_equal, path_params, params))
    from_folder = xj.XmodTokenizer.from_pretrained(folder)
    assert from_folder(MASKED).input_ids.tolist() == tokenizer(MASKED).input_ids.tolist()


def test_the_name_wins_over_a_local_folder_of_that_path(bundled, tmp_path, monkeypatch):
    (tmp_path / "xmod-jax" / "mini-debian").mkdir(parents=True)  # empty: loading it would fail
    monkeypatch.chdir(tmp_path)
    assert hub.resolve_folder(xj.BUNDLED_MODEL) == hub.bundled_folder()
    assert xj.XmodTokenizer.from_pretrained(xj.BUNDLED_MODEL).vocab_size == bundled[2].vocab_size


def test_the_folder_holds_a_small_float16_model_of_the_documented_shape(bundled):
    model, _, tokenizer = bundled
    folder = pathlib.Path(hub.bundled_folder())
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "sentencepiece.bpe.model"} <= set(files)
    assert sum(files.values()) <= MAX_BYTES, files
    with safe_open(folder / "model.safetensors", "np") as weights:
        dtypes = {key: weights.get_slice(key).get_dtype() for key in weights.keys()}
    assert set(dtypes.values()) == {"F16"}, {k: v for k, v in dtypes.items() if v != "F16"}
    config = model.config
    assert sorted(config.languages) == LANGUAGES and set(LANGUAGES) <= set(
        corpus_build.XMOD_CODES.values()
    )
    assert config.default_language == "en_XX" and config.architectures == ("XmodForMaskedLM",)
    shape = (config.hidden_size, config.num_hidden_layers, config.max_position_embeddings)
    assert shape == (256, 4, 130) and config.pre_norm
    assert config.vocab_size == tokenizer.vocab_size == 20000


def test_other_classes_load_the_encoder_by_name(bundled):
    _, params, _ = bundled
    encoder, encoder_params = xj.XmodModel.from_pretrained(
        xj.BUNDLED_MODEL, add_pooling_layer=False
    )
    assert jax.tree.all(jax.tree.map(np.array_equal, encoder_params, params["roberta"]))
    classifier, classifier_params = xj.XmodForSequenceClassification.from_pretrained(
        xj.BUNDLED_MODEL, num_labels=3
    )
    assert classifier.config.num_labels == 3
    assert jax.tree.all(jax.tree.map(np.array_equal, classifier_params["roberta"], encoder_params))


def test_pipelines_run_mixed_languages(bundled):
    model, params, tokenizer = bundled
    codes = list(TEXTS)
    mixed = pl.fill_mask(model, params, tokenizer, MASKED, codes, top_k=4, batch_size=8)
    logits = model.apply(  # the same rows, unbatched by the pipeline
        {"params": params}, tokenizer(MASKED).input_ids, lang_ids=model.config.lang_ids(codes),
        attention_mask=tokenizer(MASKED).attention_mask,
    ).logits  # fmt: skip
    for i, (prediction,) in enumerate(mixed):
        position = prediction.position
        probabilities = np.asarray(jax.nn.softmax(logits[i, position]))  # [V]
        np.testing.assert_allclose(
            prediction.scores, probabilities[prediction.token_ids], atol=1e-6
        )
        assert np.all(np.diff(prediction.scores) <= 0)
        np.testing.assert_allclose(prediction.scores[0], probabilities.max(), atol=1e-6)
    vectors = pl.embed(model, params, tokenizer, list(TEXTS.values()), codes, normalize=True)
    assert vectors.shape == (len(codes), model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_command_line_defaults_to_the_bundled_model(bundled, tmp_path, capsys):
    model, params, tokenizer = bundled
    result = xmod_jax_cli("fill-mask", "--top-k", "3", stdin="\n".join(MASKED[:3]))
    assert result.returncode == 0, result.stderr
    expected = pl.fill_mask(model, params, tokenizer, MASKED[:3], "en_XX", top_k=3)
    lines = []
    for text, (prediction,) in zip(MASKED[:3], expected, strict=True):
        lines.append(text)
        for rank, (token, score) in enumerate(zip(*prediction[2:], strict=True), start=1):
            lines.append(f"  mask 1  {rank}. {token!r} {score:.4f}")
    assert result.stdout.splitlines() == lines

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    config = model.config
    assert f"model: XmodForMaskedLM ({xj.BUNDLED_MODEL})" in out
    assert f"languages ({len(config.languages)}): {', '.join(config.languages)}" in out
    assert "default language: en_XX" in out
    total = sum(int(np.size(x)) for _, x in iter_leaves(params))
    assert re.search(rf"  total +{total:,}  ", out), out

    output = tmp_path / "vectors.npy"
    texts = list(TEXTS.values())
    assert cli.main(["embed", "--output", str(output), "--no-progress", *texts]) == 0
    expected = pl.embed(model, params, tokenizer, texts, "en_XX")
    np.testing.assert_allclose(np.load(output), expected, atol=1e-5)


@pytest.mark.parametrize("state", ["absent", "without weights"])
def test_a_missing_model_is_one_error_naming_the_folder(state, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mini-debian"
    if state == "without weights":
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "sentencepiece.bpe.model").write_bytes(b"")
    monkeypatch.setattr(hub, "BUNDLED_FOLDER", str(folder))
    message = rf"bundled model 'xmod-jax/mini-debian' is missing .*: {re.escape(str(folder))} "
    for load in (xj.XmodForMaskedLM.from_pretrained, xj.XmodModel.from_pretrained):
        with pytest.raises(xj.CheckpointError, match=message):
            load(xj.BUNDLED_MODEL)
    with pytest.raises(xj.CheckpointError, match=message):
        xj.XmodTokenizer.from_pretrained(xj.BUNDLED_MODEL)
    with pytest.raises(xj.CheckpointError, match=message):
        xj.XmodConfig.from_pretrained(xj.BUNDLED_MODEL)
    for argv in (["info"], ["fill-mask", "a <mask>"]):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and re.search(message, err), err


@needs_torch
def test_transformers_reads_the_folder_to_the_same_ids_and_logits(bundled):
    model, params, tokenizer = bundled
    folder = hub.bundled_folder()
    reference = transformers.XLMRobertaTokenizer.from_pretrained(folder)
    texts = [*TEXTS.values(), *MASKED]
    for text in texts:
        assert tokenizer.encode(text) == reference(text)["input_ids"], text
    theirs = transformers.XmodForMaskedLM.from_pretrained(folder, dtype=torch.float32).eval()
    enc = tokenizer(texts)  # padded: rows of every length
    codes = [*TEXTS, *TEXTS]
    lang_ids = model.config.lang_ids(codes)
    with torch.no_grad():
        expected = theirs(
            input_ids=torch.as_tensor(enc.input_ids, dtype=torch.long),
            attention_mask=torch.as_tensor(enc.attention_mask),
            lang_ids=torch.as_tensor(lang_ids, dtype=torch.long),
        ).logits.numpy()  # [B, T, V]
    ours = model.apply(
        {"params": params}, enc.input_ids, lang_ids=lang_ids, attention_mask=enc.attention_mask
    ).logits
    keep = enc.attention_mask.astype(bool)  # pad positions are not compared
    np.testing.assert_allclose(np.asarray(ours)[keep], expected[keep], atol=1e-4, rtol=0)
