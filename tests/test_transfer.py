"""The zero-shot transfer harness: the recipe's loop, mixed-language prediction, per-language
scores (hand-derived numbers, and corpus/section_task.py's independent metric implementation)."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest
from helpers import TINY, random_params

import xmod_jax as xj
from xmod_jax.train.transfer import (
    ClassificationSet,
    finetune_classifier,
    macro_f1,
    make_predict,
    scores_by_language,
)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "corpus"))
import section_task  # noqa: E402

CONFIG = xj.XmodConfig(**TINY, num_labels=2)
CUES = {0: range(10, 50), 1: range(50, 99)}  # a row's words all come from its label's half


def toy_set(n: int, seed: int, lang_ids) -> ClassificationSet:
    """Rows `<s> w... </s>` of 6-12 words padded to 14, drawn from the label's word ids."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, 14), 1, np.int32)
    labels = rng.integers(0, 2, n)
    for i, label in enumerate(labels):
        length = rng.integers(6, 13)
        ids[i, : length + 2] = [0, *rng.choice(CUES[label], length), 2]
    return ClassificationSet(ids, (ids != 1).astype(np.int32), labels, np.broadcast_to(lang_ids, n))


@pytest.fixture(scope="module")
def classifier():
    model = xj.XmodForSequenceClassification(CONFIG)
    return model, random_params(model, scale=0.3)


def test_set_checks_shapes():
    ids = np.zeros((3, 5), np.int32)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        ClassificationSet(ids, ids[:, :4], np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"lang_ids has shape \(2,\), expected \(3,\)"):
        ClassificationSet(ids, ids, np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="no sets"):
        ClassificationSet.concatenate([])


def test_concatenate_take_and_routing():
    a, b = toy_set(3, 0, 0), toy_set(2, 1, 2)
    both = ClassificationSet.concatenate([a, b])
    assert len(both) == 5 and both.lang_ids.tolist() == [0, 0, 0, 2, 2]
    np.testing.assert_array_equal(both.take(np.array([3, 4])).input_ids, b.input_ids)
    routed = both.routed_to(1)
    assert routed.lang_ids.tolist() == [1] * 5
    np.testing.assert_array_equal(routed.input_ids, both.input_ids)
    np.testing.assert_array_equal(routed.labels, both.labels)


def test_predict_is_the_argmax_of_each_rows_own_language(classifier):
    """Mixed batches, a padded last batch: each row's prediction is the argmax of the logits of
    that row alone, through its own adapter."""
    model, params = classifier
    data = toy_set(11, 2, np.array([0, 1, 2] * 3 + [2, 0]))
    got = make_predict(model, batch_size=4)(params, data)
    assert len(set(got.tolist())) == 2  # not a constant answer
    for i in range(len(data)):
        logits = model.apply(
            {"params": params},
            data.input_ids[i : i + 1],
            lang_ids=data.lang_ids[i : i + 1],
            attention_mask=data.attention_mask[i : i + 1],
        ).logits
        assert got[i] == int(np.argmax(logits[0])), i


def test_adapters_route_rows(classifier):
    """Random adapters: routing the same rows to another language changes some predictions."""
    model, params = classifier
    data = toy_set(64, 3, 0)
    predict = make_predict(model)
    own = predict(params, data)
    assert (own != predict(params, data.routed_to(1))).any()


def test_finetune_learns_the_task_with_the_paper_freezing(classifier):
    model = classifier[0]
    params = random_params(model, scale=0.1)
    train, valid = toy_set(512, 4, 0), toy_set(64, 5, 0)
    before = jax.device_get(params)
    result = finetune_classifier(
        model, params, train, valid=valid, steps=100, batch_size=32, learning_rate=3e-3,
        eval_every=25, seed=1,
    )  # fmt: skip
    assert len(result.losses) == 100
    assert np.mean(result.losses[-10:]) < 0.5 * np.mean(result.losses[:10])
    assert sorted(result.valid_accuracy) == [25, 50, 75, 100]
    assert result.best_step == max(result.valid_accuracy, key=result.valid_accuracy.get)
    kept = np.mean(make_predict(model)(result.params, valid) == valid.labels)
    assert kept == result.valid_accuracy[result.best_step] > 0.9
    frozen = xj.freeze_labels(params, "xmod_paper")
    changed = jax.tree.map(lambda a, b: bool((np.asarray(a) != b).any()), result.params, before)
    for label, moved in zip(jax.tree.leaves(frozen), jax.tree.leaves(changed), strict=True):
        assert moved == (label == "trainable")


def test_finetune_without_valid_keeps_the_last_step_and_reports_every_loss(classifier):
    model, params = classifier
    seen = []
    result = finetune_classifier(
        model, params, toy_set(32, 6, 1), steps=3, batch_size=8, freeze=None,
        callback=lambda step, loss: seen.append((step, loss)),
    )  # fmt: skip
    assert result.best_step == 3 and result.valid_accuracy == {}
    assert seen == list(enumerate(result.losses))
    embeddings = result.params["roberta"]["embeddings"]["word_embeddings"]["embedding"]
    assert (
        np.asarray(embeddings) != params["roberta"]["embeddings"]["word_embeddings"]["embedding"]
    ).any()
    with pytest.raises(ValueError, match="steps and eval_every"):
        finetune_classifier(model, params, toy_set(8, 0, 0), steps=0)


def test_scores_by_language_hand_derived():
    gold = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    langs = np.array([5, 5, 5, 7, 7])
    scores = scores_by_language(gold, pred, langs)
    assert scores[5] == {"n": 3, "accuracy": pytest.approx(2 / 3), "macro_f1": pytest.approx(2 / 3)}
    # language 7: gold [1, 2], pred [1, 0] -> F1 class 0: 0, class 1: 1, class 2: 0
    assert scores[7] == {"n": 2, "accuracy": 0.5, "macro_f1": pytest.approx(1 / 3)}


def test_macro_f1_agrees_with_the_task_builders_implementation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        gold, pred = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
        assert macro_f1(gold, pred) == pytest.approx(
            section_task.macro_f1(gold.tolist(), pred.tolist())
        )


# -------------------------------------------------------------------------------- task folders
def test_bundled_task_loads_for_the_bundled_model():
    from xmod_jax.tasks import BUNDLED_TASK, BUNDLED_TASK_FOLDER, load_classification_task

    tokenizer = xj.XmodTokenizer.from_pretrained(xj.BUNDLED_MODEL)
    config = xj.XmodConfig.from_pretrained(xj.BUNDLED_MODEL)
    task = load_classification_task(BUNDLED_TASK, tokenizer, config, max_length=32)
    assert len(task.classes) == 10 and task.skipped == []
    assert sorted(task.tests) == ["da_DK", "de_DE", "en_XX", "fr_XX", "it_IT"]
    assert task.train.input_ids.shape == (800, 32)
    assert set(task.train.lang_ids.tolist()) == {int(config.lang_ids("en_XX"))}
    assert set(task.tests["de_DE"].lang_ids.tolist()) == {int(config.lang_ids("de_DE"))}
    assert np.bincount(task.train.labels).tolist() == [80] * 10  # balanced, every class
    # the labels are the files' label ids, and the names line up
    first = json.loads(open(f"{BUNDLED_TASK_FOLDER}/train.jsonl").readline())
    assert task.classes[task.train.labels[0]] == first["label"]


def test_task_languages_without_an_adapter_are_skipped(tmp_path):
    from xmod_jax.tasks import BUNDLED_TASK_FOLDER, load_classification_task

    tokenizer = xj.XmodTokenizer.from_pretrained(xj.BUNDLED_MODEL)
    config = xj.XmodConfig.from_pretrained(xj.BUNDLED_MODEL, languages=["en_XX", "de_DE"])
    task = load_classification_task(BUNDLED_TASK_FOLDER, tokenizer, config, max_length=16)
    assert sorted(task.tests) == ["de_DE", "en_XX"]
    assert task.skipped == ["da_DK", "fr_XX", "it_IT"]
    with pytest.raises(FileNotFoundError, match="no labels.json"):
        load_classification_task(tmp_path, tokenizer, config)


def test_task_rows_route_to_named_adapters():
    """A shared model's one adapter: every language's rows go through it, test sets kept."""
    from xmod_jax.tasks import BUNDLED_TASK, load_classification_task

    tokenizer = xj.XmodTokenizer.from_pretrained(xj.BUNDLED_MODEL)
    config = xj.XmodConfig.from_pretrained(
        xj.BUNDLED_MODEL, languages=["xx_XX", "de_DE"], default_language="xx_XX"
    )
    routes = {"en_XX": "xx_XX", "da_DK": "xx_XX", "fr_XX": "xx_XX", "it_IT": "xx_XX"}
    task = load_classification_task(BUNDLED_TASK, tokenizer, config, 16, adapters=routes)
    assert task.skipped == []
    assert sorted(task.tests) == ["da_DK", "de_DE", "en_XX", "fr_XX", "it_IT"]
    assert set(task.train.lang_ids.tolist()) == {0}  # en_XX rows through xx_XX
    assert set(task.tests["fr_XX"].lang_ids.tolist()) == {0}
    assert set(task.tests["de_DE"].lang_ids.tolist()) == {1}  # not routed: its own adapter
    plain = load_classification_task(BUNDLED_TASK, tokenizer, config, 16, {"en_XX": "xx_XX"})
    assert sorted(plain.tests) == ["de_DE", "en_XX"]  # without a route, no adapter: skipped
    np.testing.assert_array_equal(plain.tests["de_DE"].input_ids, task.tests["de_DE"].input_ids)
    with pytest.raises(ValueError, match="'yy_YY'"):
        load_classification_task(BUNDLED_TASK, tokenizer, config, 16, adapters={"en_XX": "yy_YY"})
