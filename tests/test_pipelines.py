"""`xmod_jax.pipelines` against the raw model call, on tiny random models and a tiny tokenizer.

The sentencepiece model is trained once per session (300 pieces, `helpers.train_tokenizer`);
every model's vocabulary is the tokenizer's.
Reference numbers come from `model.apply` on unpadded rows and from hand derivation.
"""

from __future__ import annotations

import html

import jax
import numpy as np
import pytest
from helpers import MAX_POSITIONS, count_compiles, random_params, tiny_config

import xmod_jax as xj
from xmod_jax import pipelines as pl

TEXTS = [
    "the house is green",
    "Paris",
    "Die Straße über dem Fluss ist schön für Mädchen und Jungen und der Fluss",
    "le garçon naïve à l'école élève français où the capital of France is Paris",
    "東京は日本の首都です",
    "",
]
SCALE = 0.5  # random params far from uniform outputs, so languages differ
PIPELINE_FORWARD = "jit(forward)"  # what the pipelines' jitted forward pass compiles as


@pytest.fixture(scope="module")
def tok(tokenizer):
    return tokenizer


def _model(cls, tok, seed=0, **overrides):
    model = cls(tiny_config(tok.vocab_size, **overrides))
    return model, random_params(model, seed, scale=SCALE)


@pytest.fixture(scope="module")
def mlm(tok):
    return _model(xj.XmodForMaskedLM, tok)


REFERENCE_SHAPE = (8, 64)  # one shape for every reference call: eager ops compile once


def reference(model, params, tok, texts, langs, pairs=None):
    """`model.apply` on the texts padded to one [8, 64] batch -> (output, unpadded ids [T_i])."""
    rows, length = REFERENCE_SHAPE
    padding = rows - len(texts)
    enc = tok(
        texts + [""] * padding,
        None if pairs is None else pairs + [""] * padding,
        padding="max_length",
        truncation=False,
        max_length=length,
    )
    lang_ids = model.config.lang_ids(langs + [langs[0]] * padding)
    out = model.apply(
        {"params": params}, enc.input_ids, lang_ids=lang_ids, attention_mask=enc.attention_mask
    )
    return out, [ids[:n] for ids, n in zip(enc.input_ids, enc.attention_mask.sum(-1), strict=True)]


def softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------- fill_mask
def test_fill_mask_matches_the_raw_model(mlm, tok):
    model, params = mlm
    texts = ["Paris is the <mask> of France.", "a <mask> and <mask> b", "<mask>"]
    langs = ["en_XX", "fr_XX", "de_DE"]
    results = pl.fill_mask(model, params, tok, texts, langs, top_k=7, batch_size=2)
    assert [len(r) for r in results] == [1, 2, 1]
    out, rows = reference(model, params, tok, texts, langs)
    for b, (ids, masks) in enumerate(zip(rows, results, strict=False)):
        assert [m.position for m in masks] == np.flatnonzero(ids == tok.mask_token_id).tolist()
        for m in masks:
            probs = softmax(out.logits[b, m.position])
            expected = np.argsort(-probs, kind="stable")[:7]
            np.testing.assert_array_equal(m.token_ids, expected)
            np.testing.assert_allclose(m.scores, probs[expected], rtol=1e-4, atol=1e-6)
            assert m.token_ids.dtype == np.int32 and m.scores.dtype == np.float32
            assert (np.diff(m.scores) <= 0).all()  # best first
            assert m.tokens == [tok.decode([t], skip_special_tokens=False) for t in m.token_ids]


def test_fill_mask_results_show_as_a_table_in_notebooks(mlm, tok):
    """A list of lists like before, plus an HTML table: one row per mask, with its text, its
    language and its fillers (escaped)."""
    model, params = mlm
    texts = ["a <mask> & <mask> b", "<b>bold</b> <mask>"]
    results = pl.fill_mask(model, params, tok, texts, ["fr_XX", "de_DE"], top_k=2)
    assert isinstance(results, list) and [len(r) for r in results] == [2, 1]
    assert results == [list(r) for r in results]
    flat = jax.tree.leaves(results)  # a pytree like a plain list of lists of named tuples
    assert len(flat) == len(jax.tree.leaves([list(r) for r in results]))
    assert flat[0] == results[0][0].position
    doubled = jax.tree.map(lambda x: x, results)
    assert type(doubled) is type(results) and doubled.langs == ["fr_XX", "de_DE"]
    table = results._repr_html_()
    assert table.count("<tr>") == 1 + 3  # the header and one row per mask
    assert "<td>fr_XX</td><td>2</td>" in table and "<td>de_DE</td><td>1</td>" in table
    assert "&lt;b&gt;bold&lt;/b&gt;" in table and "<b>bold" not in table
    for prediction in results[1]:
        first = prediction.tokens[0].strip() or repr(prediction.tokens[0])
        assert f"{first} ({prediction.scores[0]:.3f})" in html.unescape(table)


def test_fill_mask_routes_languages_per_text(mlm, tok):
    model, params = mlm
    texts = ["the <mask> is green", "Die <mask> ist schön", "le <mask> naïve", "x <mask>"]
    langs = ["de_DE", "en_XX", "fr_XX", "en_XX"]
    mixed = pl.fill_mask(model, params, tok, texts, langs, top_k=4, batch_size=3)
    for lang in set(langs):
        picked = [i for i, code in enumerate(langs) if code == lang]
        alone = pl.fill_mask(model, params, tok, [texts[i] for i in picked], lang, top_k=4)
        for i, result in zip(picked, alone, strict=True):
            np.testing.assert_array_equal(mixed[i][0].token_ids, result[0].token_ids)
            np.testing.assert_allclose(mixed[i][0].scores, result[0].scores, atol=1e-6)
    other = pl.fill_mask(model, params, tok, texts[0], "en_XX", top_k=4)
    assert not np.allclose(other[0][0].scores, mixed[0][0].scores)  # the adapter matters


def test_fill_mask_errors(mlm, tok):
    model, params = mlm
    with pytest.raises(ValueError, match=r"texts\[1\] has no <mask>"):
        pl.fill_mask(model, params, tok, ["a <mask>", "none here"], "en_XX")
    with pytest.raises(ValueError, match="top_k"):
        pl.fill_mask(model, params, tok, "a <mask>", "en_XX", top_k=0)
    clf, clf_params = _model(xj.XmodForSequenceClassification, tok)
    with pytest.raises(ValueError, match="fill_mask needs an XmodForMaskedLM"):
        pl.fill_mask(clf, clf_params, tok, "a <mask>", "en_XX")


# -------------------------------------------------------------------------------- embed
def _mean_pool(hidden, ids):
    mask = (ids != 1).astype(np.float64)[:, None]  # unpadded rows: every token counts
    return (np.asarray(hidden, np.float64) * mask).sum(0) / mask.sum()


def test_embed_is_a_mean_pool_of_the_encoder(mlm, tok):
    model, params = mlm
    encoder = xj.XmodModel(model.config, add_pooling_layer=False)
    langs = ["en_XX", "de_DE", "fr_XX", "en_XX", "de_DE", "fr_XX"]
    vectors = pl.embed(model, params, tok, TEXTS, langs, batch_size=4)
    assert vectors.shape == (len(TEXTS), 16) and vectors.dtype == np.float32
    out, rows = reference(encoder, params["roberta"], tok, TEXTS, langs)
    for b, (ids, vector) in enumerate(zip(rows, vectors, strict=False)):
        expected = _mean_pool(out.last_hidden_state[b, : len(ids)], ids)
        np.testing.assert_allclose(vector, expected, atol=1e-5)
    unit = pl.embed(model, params, tok, TEXTS, langs, normalize=True, batch_size=4)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, vectors / np.linalg.norm(vectors, axis=-1)[:, None], atol=1e-6)
    # A bare XmodModel (with its pooler) holding the same encoder weights gives the same vectors.
    bare = xj.XmodModel(model.config)
    bare_params = {**params["roberta"], "pooler": random_params(bare, scale=SCALE)["pooler"]}
    np.testing.assert_allclose(
        pl.embed(bare, bare_params, tok, TEXTS, langs, batch_size=4), vectors, atol=1e-6
    )


def test_embed_truncates_to_the_largest_bucket(mlm, tok):
    model, params = mlm
    long_text = " ".join(TEXTS * 6)
    assert len(tok.encode(long_text)) > MAX_POSITIONS
    assert pl.length_buckets(model, tok) == (16, 32, 64)
    vector = pl.embed(model, params, tok, [long_text, "short"], "de_DE", batch_size=2)[0]
    ids = tok(long_text, max_length=64).input_ids  # [1, 64]: </s> kept last
    assert ids.shape == (1, 64) and ids[0, -1] == tok.eos_token_id
    hidden = xj.XmodModel(model.config, add_pooling_layer=False).apply(
        {"params": params["roberta"]},
        np.repeat(ids, REFERENCE_SHAPE[0], axis=0),  # the reference shape, compiled already
        lang_ids=model.config.lang_ids("de_DE"),
    )
    np.testing.assert_allclose(vector, _mean_pool(hidden.last_hidden_state[0], ids[0]), atol=1e-5)


def test_compilations_are_bounded_by_the_buckets(tok):
    """Many lengths and batch counts: one compilation per bucket, none once all are seen."""
    model, params = _model(xj.XmodModel, tok, default_language="fr_XX")  # a fresh cache entry
    rng = np.random.default_rng(0)
    words = " ".join(TEXTS).split()

    def texts(n):  # 1 to 60 words: lengths across all three buckets, and truncation
        return [" ".join(rng.choice(words, rng.integers(1, 60))) for _ in range(n)]

    with count_compiles() as compiles:
        for n in (1, 3, 7, 10, 25):
            pl.embed(model, params, tok, texts(n), batch_size=4)
    assert compiles[PIPELINE_FORWARD] == len(pl.length_buckets(model, tok)) == 3
    with count_compiles() as compiles:
        for n in (2, 5, 9, 13):
            pl.embed(model, params, tok, texts(n), batch_size=4)
            pl.embed(model, params, tok, texts(n), ["en_XX"] * n, batch_size=4)
        equal = xj.XmodModel(model.config)  # equal modules share the compiled forward
        pl.embed(equal, params, tok, texts(9), batch_size=4)
    assert compiles == {}


# ------------------------------------------------------------------------------- classify
@pytest.mark.parametrize(
    "problem_type, num_labels",
    [(None, 3), ("multi_label_classification", 3), ("regression", 1)],
)
def test_classify_matches_the_raw_logits(tok, problem_type, num_labels):
    labels = ["neg", "neutral", "pos"][:num_labels] if num_labels > 1 else ["score"]
    model, params = _model(
        xj.XmodForSequenceClassification, tok, id2label=labels, problem_type=problem_type
    )
    langs = ["fr_XX", "en_XX", "de_DE", "de_DE", "en_XX", "fr_XX"]
    texts = [t[:20] for t in TEXTS]  # one bucket
    results = pl.classify(model, params, tok, texts, langs, batch_size=4)
    out = reference(model, params, tok, texts, langs)[0]
    for b, result in enumerate(results):
        logits = np.asarray(out.logits[b], np.float64)
        if problem_type is None:
            expected = softmax(logits)
            assert result.scores.sum() == pytest.approx(1.0, abs=1e-5)
        elif problem_type == "regression":
            expected = logits
        else:
            expected = 1 / (1 + np.exp(-logits))
        np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-5)
        assert result.label == labels[int(np.argmax(expected))]
        assert result.score == pytest.approx(float(expected.max()), rel=1e-4, abs=1e-5)


# ------------------------------------------------------------------------------------ tag
def test_tag_labels_words_by_their_first_token(tok):
    labels = ["O", "B-LOC", "I-LOC", "B-PER"]
    model, params = _model(xj.XmodForTokenClassification, tok, id2label=labels)
    texts = ["the house is green and Paris", "Die Straße über dem Fluss", "schön", "the<mask>house"]
    langs = ["en_XX", "de_DE", "de_DE", "fr_XX"]
    results = pl.tag(model, params, tok, texts, langs, batch_size=3)
    assert [w.word for w in results[0]] == texts[0].split()  # "▁" pieces start words
    assert [w.word for w in results[3]] == ["the", "<mask>", "house"]
    out, rows = reference(model, params, tok, texts, langs)
    for b, (text, ids, words) in enumerate(zip(texts, rows, results, strict=False)):
        probs = softmax(out.logits[b, : len(ids)])  # [T, num_labels]
        pieces = tok.convert_ids_to_tokens(ids)
        firsts = [t for t in range(1, len(ids) - 1) if t == 1 or pieces[t].startswith("▁")]
        if text == "the<mask>house":
            firsts = [1, 2, 3]
        assert len(words) == len(firsts)
        for word, t in zip(words, firsts, strict=True):
            assert word.label == labels[int(probs[t].argmax())]
            assert word.score == pytest.approx(float(probs[t].max()), rel=1e-4)
    assert pl.tag(model, params, tok, "", "en_XX") == [[]]


def test_word_ids(tok):
    ids = tok(["the house", "東京は x<mask>y", "a"], padding=True).input_ids
    pieces = [tok.convert_ids_to_tokens(row) for row in ids]
    assert pieces[1][1:3] == ["▁東京", "は"]  # one word of two pieces
    expected = _expected_word_ids(pieces)
    assert expected[0].tolist()[:4] == [-1, 0, 1, -1] and expected[1].max() == 3
    np.testing.assert_array_equal(tok.word_ids(ids), expected)
    np.testing.assert_array_equal(tok.word_ids(ids[1]), expected[1])
    pair = tok("the house", "green").input_ids[0]  # <s> the house </s></s> green </s>
    np.testing.assert_array_equal(
        tok.word_ids(pair), _expected_word_ids([tok.convert_ids_to_tokens(pair)])[0]
    )
    assert tok.word_ids(pair).max() == 2
    with pytest.raises(ValueError, match="shape"):
        tok.word_ids(np.zeros((1, 1, 1), np.int32))


def _expected_word_ids(rows):
    out = []
    for pieces in rows:
        word, ids = -1, []
        for piece in pieces:
            if piece in ("<s>", "</s>", "<pad>"):
                ids.append(-1)
                continue
            word += piece.startswith("▁") or piece == "<mask>" or not ids or ids[-1] == -1
            ids.append(word)
        out.append(ids)
    return np.array(out)


def test_word_ids_match_transformers(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok.save_pretrained(tmp_path)
    reference = transformers.XLMRobertaTokenizer.from_pretrained(tmp_path)
    texts = [*TEXTS, "a <mask>  b", "Paris is the<mask>of France.", "unknown ☃ Ω", "3.14 ①"]
    enc = reference(texts, padding=True, return_tensors="np")
    ours = tok.word_ids(enc["input_ids"])
    for i in range(len(texts)):
        expected = [-1 if w is None else w for w in enc.word_ids(i)]
        assert ours[i].tolist() == expected, texts[i]


# --------------------------------------------------------------------------------- answer
def test_answer_finds_the_best_context_span(tok):
    model, params = _model(xj.XmodForQuestionAnswering, tok)
    questions = ["where is Paris", "what is green", "wo", "what"]
    contexts = [TEXTS[3], TEXTS[0], TEXTS[2], "Paris"]
    langs = ["fr_XX", "en_XX", "de_DE", "en_XX"]
    out, rows = reference(model, params, tok, questions, langs, pairs=contexts)
    for max_tokens in (30, 1):
        results = pl.answer(
            model, params, tok, questions, contexts, langs, max_answer_tokens=max_tokens
        )
        for b, (q, ids, result) in enumerate(zip(questions, rows, results, strict=False)):
            first = len(tok.encode(q)) + 1  # <s> q </s> </s>
            stop = len(ids) - 1
            p_start = softmax(out.start_logits[b, first:stop])
            p_end = softmax(out.end_logits[b, first:stop])
            best = max(
                (p_start[s] * p_end[e], s, e)
                for s in range(stop - first)
                for e in range(s, min(s + max_tokens, stop - first))
            )
            assert result.score == pytest.approx(best[0], rel=1e-4)
            assert (result.start, result.end) == (first + best[1], first + best[2])
            assert result.text == tok.decode(ids[result.start : result.end + 1])
            assert result.end - result.start < max_tokens


# --------------------------------------------------------------------------------- errors
def test_input_errors(mlm, tok):
    model, params = mlm
    with pytest.raises(ValueError, match="texts is empty"):
        pl.embed(model, params, tok, [], "en_XX")
    with pytest.raises(ValueError, match="unknown language 'xx_XX'; known: en_XX, de_DE, fr_XX"):
        pl.embed(model, params, tok, ["a", "b"], ["en_XX", "xx_XX"])
    with pytest.raises(ValueError, match="lang has 1 codes for 2 texts"):
        pl.embed(model, params, tok, ["a", "b"], ["en_XX"])
    with pytest.raises(ValueError, match="pass lang="):
        pl.embed(model, params, tok, ["a"])
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        pl.embed(model, params, tok, ["a", 3], "en_XX")
    with pytest.raises(ValueError, match="batch_size"):
        pl.embed(model, params, tok, ["a"], "en_XX", batch_size=0)
    small, small_params = xj.XmodModel(tiny_config(99)), None
    with pytest.raises(ValueError, match="tokenizer has 302 ids"):
        pl.embed(small, small_params, tok, ["a"], "en_XX")
    qa, qa_params = _model(xj.XmodForQuestionAnswering, tok)
    with pytest.raises(ValueError, match="2 questions but 1 contexts"):
        pl.answer(qa, qa_params, tok, ["a", "b"], ["c"], "en_XX")
    with pytest.raises(ValueError, match=r"contexts\[0\] has no tokens"):
        pl.answer(qa, qa_params, tok, "a", "", "en_XX")
    with pytest.raises(ValueError, match="classify needs an XmodForSequenceClassification"):
        pl.classify(qa, qa_params, tok, "a", "en_XX")
