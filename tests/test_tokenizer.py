"""`XmodTokenizer` against transformers' `XLMRobertaTokenizer` on a small unigram model.

The sentencepiece model is trained here on generated multilingual text, saved as
`sentencepiece.bpe.model` and loaded by both tokenizers from the same folder.
"""

import json
import random
import shutil

import numpy as np
import pytest
import sentencepiece as spm
from helpers import WORDS, make_corpus, needs_torch, require_torch, train_spm_model, transformers

from xmod_jax.errors import CheckpointError
from xmod_jax.text.tokenizer import XmodTokenizer

MAX_LENGTH = 32  # model_max_length in the fixture folder's tokenizer_config.json
TEXTS = [
    "Paris is the <mask> of France.",
    "Paris is the<mask>of France.",
    "a <mask>  b",
    "<mask>",
    " <mask> ",
    "<s> and </s> and <pad> and <unk> in text",
    "＜mask＞ and ＜s＞ in fullwidth",
    "Die Straße über dem Fluss ist schön.",
    "le garçon naïve à l'école élève",
    "東京は日本の首都です。北京大学",
    "مرحبا بالعالم",
    "😀🎉 👍🏽 family 👨\u200d👩\u200d👧 flag 🇫🇷",
    "3.14 and 12345 and 1,000,000",
    "  leading and trailing  ",
    "multiple    spaces",
    "tabs\tand\nnewlines\r\nand\x0bvertical",
    "",
    "   ",
    "\t\n",
    "unknown ☃ Ω ⊗ 𝔘 ∰",
    "decomposed e\u0301 a\u0308 and \u2460\u0301",
    "nbsp\u00a0ideographic\u3000nel\x85zwsp\u200bend",
    "\u2581literal\u2581\u2581space",
    "ｶﾞ halfwidth ﬁ ligature ＡＢＣ ①",
]
FUZZ_CHARS = list("abcdefghijklmnopqrstuvwxyzäöüßéèàçñ東京日本語北京مرحباαβγабв😀🎉12.,!?<>") + [
    " ",
    "  ",
    "\t",
    "\n",
    "\u00a0",
    "\u3000",
    "\u200b",
    "\u200d",
    "\u0301",
    "\u0308",
    "e\u0301",
    "👍🏽",
    "🇫🇷",
    "①",
    "ﬁ",
    "Ａ",
    "ｶﾞ",
    "\u0e33",
    "\u2581",
    "<mask>",
    "<s>",
    "</s>",
    "☃",
]


def fuzz_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(FUZZ_CHARS) for _ in range(rng.randint(0, 16))) for _ in range(n)]


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory):
    """A folder with a trained unigram sentencepiece.bpe.model and tokenizer_config.json."""
    folder = tmp_path_factory.mktemp("spm")
    train_spm_model(folder)
    (folder / "m.model").rename(folder / "sentencepiece.bpe.model")
    (folder / "m.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": MAX_LENGTH}))
    return folder


@pytest.fixture(scope="module")
def reference(spm_folder):
    require_torch()
    tok = transformers.XLMRobertaTokenizer.from_pretrained(spm_folder)
    # XLMRobertaTokenizer(vocab_file=...) would silently hold 5 tokens; from_pretrained holds all.
    sp = spm.SentencePieceProcessor(model_file=str(spm_folder / "sentencepiece.bpe.model"))
    assert len(tok) == sp.get_piece_size() + 2 == 302
    return tok


@pytest.fixture(scope="module")
def ours(spm_folder):
    return XmodTokenizer.from_pretrained(spm_folder)


@pytest.fixture(scope="module")
def json_folder(reference, tmp_path_factory):
    """transformers' save_pretrained output with tokenizer.json as the only model file."""
    folder = tmp_path_factory.mktemp("json")
    reference.save_pretrained(folder)
    (folder / "sentencepiece.bpe.model").unlink(missing_ok=True)
    assert (folder / "tokenizer.json").exists()
    return folder


def reference_ids(tok, texts, pairs=None, padding=True, truncation=True, **kwargs):
    """transformers' ids with XmodTokenizer's defaults: it pads and truncates unless told not."""
    out = tok(texts, pairs, padding=padding, truncation=truncation, return_tensors="np", **kwargs)
    return out["input_ids"], out["attention_mask"]


def assert_same_encoding(ours, reference, texts, pairs=None, **kwargs):
    ids, mask = reference_ids(reference, texts, pairs, **kwargs)
    enc = ours(texts, pairs, **kwargs)
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.attention_mask, mask)


def test_ids_and_special_tokens(ours, reference):
    assert ours.vocab_size == len(ours) == len(reference) == 302
    assert ours.bos_token_id == reference.bos_token_id == 0
    assert ours.pad_token_id == reference.pad_token_id == 1
    assert ours.eos_token_id == reference.eos_token_id == 2
    assert ours.unk_token_id == reference.unk_token_id == 3
    assert ours.mask_token_id == reference.mask_token_id == 301
    assert ours.mask_token == reference.mask_token == "<mask>"
    assert ours.model_max_length == reference.model_max_length == MAX_LENGTH
    ids = list(range(302))
    assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
    tokens = reference.convert_ids_to_tokens(ids) + ["not-a-piece"]
    assert ours.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens)
    assert ours.convert_ids_to_tokens(301) == "<mask>"
    assert ours.convert_tokens_to_ids("<s>") == 0


@pytest.mark.parametrize("text", TEXTS)
def test_single_text_matches(ours, reference, text):
    assert_same_encoding(ours, reference, text)
    assert ours.encode(text) == reference(text)["input_ids"]


def test_mask_in_text(ours, reference):
    ids = ours("Paris is the <mask> of France.").input_ids[0].tolist()
    assert ids == reference("Paris is the <mask> of France.")["input_ids"]
    assert ids.count(ours.mask_token_id) == 1
    # As in transformers, the space before <mask> is dropped and the next word starts with "▁".
    assert ours.decode(ids, skip_special_tokens=False) == "<s> Paris is the<mask> of France.</s>"
    assert ours.tokenize("the<mask>of") == ours.tokenize("the <mask> of")
    assert ours.tokenize("x<mask>")[-1] == "<mask>"


def test_random_text_matches(ours, reference):
    for text in fuzz_texts(1500):
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text, add_special_tokens=False) == expected, repr(text)


def test_batch_and_pairs_match(ours, reference):
    assert_same_encoding(ours, reference, TEXTS)
    assert_same_encoding(ours, reference, TEXTS, TEXTS[::-1])
    assert_same_encoding(ours, reference, "a question", "a context")
    texts = [" ".join(random.Random(i).choices(WORDS, k=i % 7)) for i in range(12)]
    assert_same_encoding(ours, reference, texts, texts[3:] + texts[:3])


@pytest.mark.parametrize("max_length", [4, 5, 6, 9, 13, 32, 64])
def test_truncation_matches(ours, reference, max_length):
    rng = random.Random(max_length)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(0, 20))) for _ in range(8)]
    pairs = [" ".join(rng.choices(WORDS, k=rng.randint(0, 20))) for _ in range(8)]
    assert_same_encoding(ours, reference, texts, truncation=True, max_length=max_length)
    assert_same_encoding(ours, reference, texts, pairs, truncation=True, max_length=max_length)
    enc = ours(texts, pairs, max_length=max_length)
    assert enc.input_ids.shape[1] <= max_length
    ends = enc.input_ids[np.arange(8), enc.attention_mask.sum(1) - 1]
    np.testing.assert_array_equal(ends, ours.eos_token_id)  # </s> stays last


def test_truncation_defaults_to_model_max_length(ours, reference):
    long_text = " ".join(WORDS * 3)
    enc = ours([long_text, "short"])
    assert enc.input_ids.shape == (2, MAX_LENGTH)
    assert_same_encoding(ours, reference, [long_text, "short"], truncation=True)
    assert_same_encoding(ours, reference, long_text, long_text[:40], truncation=True)
    untruncated = ours(long_text, truncation=False)
    assert untruncated.input_ids.shape[1] == len(reference(long_text)["input_ids"]) > MAX_LENGTH


def test_padding_options(ours, reference):
    texts = ["a short one", "a somewhat longer text with more words"]
    assert_same_encoding(ours, reference, texts, padding="max_length", max_length=20)
    assert_same_encoding(ours, reference, texts, padding="longest", max_length=20)
    assert_same_encoding(ours, reference, texts, padding="max_length", truncation=True)
    with pytest.raises(ValueError, match="more than max_length=4"):
        ours(texts, padding="max_length", truncation=False, max_length=4)
    same = ours(["abc", "abc"], padding=False)
    assert same.input_ids.shape == (2, len(reference("abc")["input_ids"]))
    with pytest.raises(ValueError, match="padding=True"):
        ours(texts, padding=False)


def test_output_format(ours):
    enc = ours(["hello world", "x"], text_pair=["a", "b"])
    assert set(enc) == {"input_ids", "attention_mask"}  # no lang_ids: pipelines add them
    assert enc.input_ids is enc["input_ids"]
    assert enc.input_ids.dtype == enc.attention_mask.dtype == np.int32
    assert enc.input_ids.shape == enc.attention_mask.shape
    assert ((enc.input_ids == ours.pad_token_id) == (enc.attention_mask == 0)).all()
    with pytest.raises(AttributeError, match="lang_ids"):
        enc.lang_ids  # noqa: B018


@pytest.mark.parametrize("skip", [True, False])
def test_decode_matches(ours, reference, skip):
    rows = [reference(text)["input_ids"] for text in TEXTS]
    rows += [reference(a, b)["input_ids"] for a, b in zip(TEXTS, TEXTS[1:], strict=False)]
    rows += [[0, 4, 4, 2, 1, 1], [301, 4, 5], [3, 4, 3], [4], [], [1, 1, 2], [5, 0, 5]]
    for row in rows:
        expected = reference.decode(row, skip_special_tokens=skip)
        assert ours.decode(row, skip_special_tokens=skip) == expected, row
        assert ours.decode(np.array(row, np.int32), skip_special_tokens=skip) == expected
    batch = reference(TEXTS[:6], padding=True, return_tensors="np")["input_ids"]
    expected = reference.batch_decode(batch, skip_special_tokens=skip)
    assert ours.batch_decode(batch, skip_special_tokens=skip) == expected
    assert ours.decode(batch, skip_special_tokens=skip) == expected
    assert ours.batch_decode(rows[:5], skip_special_tokens=skip) == [
        reference.decode(row, skip_special_tokens=skip) for row in rows[:5]
    ]


def test_decode_jax_array(ours, reference):
    jnp = pytest.importorskip("jax.numpy")
    ids = ours("Paris is the <mask> of France.").input_ids
    assert ours.decode(jnp.asarray(ids[0])) == reference.decode(ids[0], skip_special_tokens=True)
    assert ours.batch_decode(jnp.asarray(ids)) == ["Paris is the of France."]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.decode([5, 302])


def test_tokenizer_json_only(ours, reference, json_folder):
    from_json = XmodTokenizer.from_pretrained(json_folder)
    assert from_json.vocab_size == ours.vocab_size
    assert from_json.model_max_length == MAX_LENGTH
    assert_same_encoding(from_json, reference, TEXTS, TEXTS[::-1])
    for text in fuzz_texts(300, seed=1):
        assert from_json.encode(text) == reference(text)["input_ids"], repr(text)
    ids = reference(TEXTS)["input_ids"]
    assert from_json.batch_decode(ids, False) == reference.batch_decode(ids)


def test_legacy_tokenizer_json(reference, json_folder, tmp_path):
    """tokenizer.json as older transformers wrote it for XLM-R: a normalizer Sequence."""
    data = json.loads((json_folder / "tokenizer.json").read_text())
    replace = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
    data["normalizer"] = {"type": "Sequence", "normalizers": [data["normalizer"], replace]}
    data["pre_tokenizer"] = {
        "type": "Metaspace",
        "replacement": "\u2581",
        "prepend_scheme": "always",
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    legacy = XmodTokenizer.from_pretrained(tmp_path)
    assert legacy.model_max_length == 512
    hf_legacy = transformers.XLMRobertaTokenizer.from_pretrained(tmp_path, model_max_length=512)
    for text in TEXTS + fuzz_texts(200, seed=3):
        assert legacy.encode(text) == hf_legacy(text)["input_ids"], repr(text)


@needs_torch
def test_user_defined_and_control_symbols(tmp_path):
    """sentencepiece user-defined and control symbols are cut out of raw text, as transformers."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_corpus(200)),
        model_prefix=str(tmp_path / "m"),
        vocab_size=200,
        model_type="unigram",
        character_coverage=1.0,
        user_defined_symbols=["<lang>", "xx"],
        control_symbols=["<ctl>"],
        num_threads=1,
        minloglevel=2,
    )
    (tmp_path / "m.model").rename(tmp_path / "sentencepiece.bpe.model")
    ours = XmodTokenizer.from_pretrained(tmp_path)
    reference = transformers.XLMRobertaTokenizer.from_pretrained(tmp_path)
    for text in ["a<lang>b xx axxb <ctl> a<ctl>b", "xxx <lang><lang>", *TEXTS[:8]]:
        ids = reference(text)["input_ids"]
        assert ours.encode(text) == ids, repr(text)
        for skip in (True, False):  # <ctl> is special, <lang> and xx are not
            assert ours.decode(ids, skip) == reference.decode(ids, skip_special_tokens=skip)


@needs_torch
@pytest.mark.parametrize("source", ["spm", "json"])
def test_save_pretrained_round_trip(ours, json_folder, tmp_path, source):
    tok = ours if source == "spm" else XmodTokenizer.from_pretrained(json_folder)
    tok.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sentencepiece.bpe.model",
        "tokenizer_config.json",
    ]
    reloaded = transformers.XLMRobertaTokenizer.from_pretrained(tmp_path)
    assert len(reloaded) == tok.vocab_size
    assert reloaded.model_max_length == MAX_LENGTH
    assert_same_encoding(tok, reloaded, TEXTS, TEXTS[::-1])
    again = XmodTokenizer.from_pretrained(tmp_path)
    for text in fuzz_texts(200, seed=2):
        assert again.encode(text) == tok.encode(text) == reloaded(text)["input_ids"], repr(text)


def test_model_max_length_sources(spm_folder, tmp_path):
    model = spm_folder / "sentencepiece.bpe.model"
    shutil.copy(model, tmp_path / model.name)
    assert XmodTokenizer.from_pretrained(tmp_path).model_max_length == 512  # no config
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"model_max_length": int(1e30)}))  # transformers' "no limit"
    assert XmodTokenizer.from_pretrained(tmp_path).model_max_length == 512
    config.write_text(json.dumps({"model_max_length": 128}))
    assert XmodTokenizer.from_pretrained(tmp_path).model_max_length == 128
    assert XmodTokenizer.from_pretrained(tmp_path, model_max_length=8).model_max_length == 8
    tok = XmodTokenizer(model_file=model, model_max_length=7)
    assert tok.model_max_length == 7
    assert tok(" ".join(WORDS)).input_ids.shape == (1, 7)
    assert XmodTokenizer(model_file=str(model)).model_max_length == 512


def test_input_errors(ours):
    with pytest.raises(ValueError, match="empty"):
        ours([])
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        ours(["ok", 3])
    with pytest.raises(TypeError, match="texts must be a str"):
        ours(None)
    with pytest.raises(TypeError, match="text_pair"):
        ours(["a"], [b"bytes"])
    with pytest.raises(ValueError, match="text_pair has 1 texts but texts has 2"):
        ours(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="max_length >= 4"):
        ours("a long enough text", "and its pair", max_length=3)
    with pytest.raises(ValueError, match="padding"):
        ours("a", padding="left")


def test_file_errors(spm_folder, tmp_path):
    with pytest.raises(CheckpointError, match="sentencepiece.bpe.model and tokenizer.json") as e:
        XmodTokenizer.from_pretrained(tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(CheckpointError, match="no folder"):
        XmodTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="is a file"):
        XmodTokenizer.from_pretrained(spm_folder / "sentencepiece.bpe.model")
    (tmp_path / "sentencepiece.bpe.model").write_bytes(b"\xff\xff not a model")
    with pytest.raises(CheckpointError, match="not a sentencepiece model"):
        XmodTokenizer.from_pretrained(tmp_path)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_corpus()),
        model_prefix=str(tmp_path / "bpe"),
        vocab_size=200,
        model_type="bpe",
        minloglevel=2,
    )
    with pytest.raises(CheckpointError, match="BPE sentencepiece model"):
        XmodTokenizer(model_file=tmp_path / "bpe.model")
