"""`corpus/section_task.py` on small inline records: class selection, splits, caps, the naive
Bayes baseline and the metrics; plus, when the corpus has been built, a leakage check of the
real test sets against the pre-training text."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import random
import sys
from collections import Counter

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "corpus"


def load_task_module():
    """Import corpus/section_task.py (corpus/ is not a package)."""
    path = ROOT / "corpus" / "section_task.py"
    spec = importlib.util.spec_from_file_location("corpus_section_task", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


st = load_task_module()

SPLIT_OF = {f"pkg:src{i}": ("train", "train", "train", "valid", "test")[i % 5] for i in range(20)}
SECTIONS = ("games", "sound", "libs", "science")  # libs is not a class of the toy task
CLASSES = ("games", "sound", "science")


def rec(package, family, section, text, split=None):
    """A raw DDTP record as corpus/build.py writes it."""
    split = split or SPLIT_OF[family]
    return {"package": package, "family": family, "section": section, "split": split,
            "md5": "0" * 32, "text": text}  # fmt: skip


def toy_corpus():
    """Two languages; 20 families of 2 binaries each, sections cycling through SECTIONS."""
    english, german = [], []
    for i in range(20):
        for j in range(2):
            section = SECTIONS[(i + j) % len(SECTIONS)]
            package = f"pkg{i:02d}-{j}"
            english.append(rec(package, f"pkg:src{i}", section, f"{section} tool {i} part {j}"))
            if i % 2 == 0:
                german.append(rec(package, f"pkg:src{i}", section, f"{section} Werkzeug {i} {j}"))
    return {"en_XX": english, "de_DE": german}


def build(corpus=None):
    """The toy task without caps, every language tested."""
    corpus = corpus or toy_corpus()
    return st.build_task(corpus, CLASSES, max_per_class=None, max_per_family=None, min_test=1)


def dump(task):
    return json.dumps([task.train, task.valid, task.tests], sort_keys=True)


# ------------------------------------------------------------------------ classes and splits


def test_labels_come_from_the_section_and_unknown_sections_are_dropped():
    records = [
        rec("b", "pkg:src0", "sound", "B"),
        rec("a", "pkg:src0", "games", "A"),
        rec("c", "pkg:src1", "libs", "C"),
        rec("d", "pkg:src1", "no-such-section", "D"),
    ]
    out = st.select_classes(records, CLASSES, "en_XX")
    assert [(r["package"], r["label"], r["label_id"]) for r in out] == [
        ("a", "games", 0),
        ("b", "sound", 1),
    ]
    assert set(out[0]) == {"package", "family", "label", "label_id", "lang", "text", "split"}
    task = build()
    for records in [task.train, task.valid, *task.tests.values()]:
        for r in records:
            assert r["label"] in CLASSES and CLASSES[r["label_id"]] == r["label"]
            assert r["text"].startswith(r["label"])  # the toy texts start with the section
    assert st.balance(task.train, CLASSES)["games"] > 0


def test_splits_are_deterministic_and_independent_of_input_order():
    first, second = build(), build()
    assert dump(first) == dump(second)
    shuffled = toy_corpus()
    rng = random.Random(0)
    for records in shuffled.values():
        rng.shuffle(records)
    assert dump(build(shuffled)) == dump(first)
    assert [r["package"] for r in first.train] == sorted(r["package"] for r in first.train)
    assert sorted(first.tests) == ["de_DE", "en_XX"]


def test_no_family_on_two_sides_and_test_records_are_test_split():
    task = build()
    families = {
        "train": {r["family"] for r in task.train},
        "valid": {r["family"] for r in task.valid},
        "test": {r["family"] for recs in task.tests.values() for r in recs},
    }
    assert families["train"] and families["valid"] and families["test"]
    assert not families["train"] & families["valid"]
    assert not families["train"] & families["test"]
    assert not families["valid"] & families["test"]
    # test records are test-split records only, so they are in no pre-training (train) text
    for records in task.tests.values():
        assert all(SPLIT_OF[r["family"]] == "test" and r["split"] == "test" for r in records)
    assert all(r["lang"] == "en_XX" and r["split"] == "train" for r in task.train)
    assert all(r["lang"] == "en_XX" and r["split"] == "valid" for r in task.valid)
    assert {r["lang"] for r in task.tests["de_DE"]} == {"de_DE"}

    leaky = st.Task(CLASSES, task.train, task.train[:1], task.tests)  # a train record as valid
    with pytest.raises(AssertionError):
        st.check_disjoint(leaky)
    corpus = toy_corpus()
    corpus["de_DE"].append(rec("x", "pkg:src0", "games", "games x", split="test"))
    with pytest.raises(AssertionError, match="two splits"):
        st.build_task(corpus, CLASSES)


def test_identical_texts_are_dropped_within_a_split():
    corpus = {
        "en_XX": [
            rec("b", "pkg:src1", "games", "same text"),
            rec("a", "pkg:src0", "games", "same text"),
            rec("d", "pkg:src2", "sound", "other text"),
            rec("e", "pkg:src8", "games", "valid text"),
            rec("c", "pkg:src3", "games", "valid text"),
            rec("f", "pkg:src13", "games", "same text"),  # valid, but a train text: dropped
        ]
    }
    task = build(corpus)
    assert [r["package"] for r in task.train] == ["a", "d"]  # sorted by package, first kept
    assert [r["package"] for r in task.valid] == ["c"]
    assert task.near_train == {"valid": ["f"]}


def test_balance_cap_and_family_cap():
    records = [
        {"package": f"p{i}", "family": f"pkg:f{i % 2}", "label": "games" if i < 6 else "sound"}
        for i in range(8)
    ]
    capped = st.cap_per_class(records, 2)
    by_label = {label: [r for r in capped if r["label"] == label] for label in ("games", "sound")}
    assert len(by_label["games"]) == 2 and len(by_label["sound"]) == 2
    lowest = sorted((f"p{i}" for i in range(6)), key=st.sha1)[:2]
    assert sorted(r["package"] for r in by_label["games"]) == sorted(lowest)
    assert capped == [r for r in records if r in capped]  # order kept
    assert st.cap_per_class(records, None) == records
    assert st.cap_per_class(records, 100) == records
    assert st.cap_per_class(list(reversed(records)), 2) == list(reversed(capped))

    per_family = st.cap_per_family(records, 3)
    assert sorted(Counter(r["family"] for r in per_family).values()) == [3, 3]

    corpus = toy_corpus()
    task = st.build_task(corpus, CLASSES, max_per_class=3, max_per_family=None, min_test=1)
    assert max(st.balance(task.train, CLASSES).values()) == 3
    assert task.uncapped_train > len(task.train)
    assert len(task.valid) == len(build(corpus).valid)  # the cap is for training only


def test_languages_below_min_test_get_no_test_set():
    corpus = toy_corpus()
    n_de = len(build(corpus).tests["de_DE"])
    task = st.build_task(corpus, CLASSES, None, None, min_test=n_de + 1)
    assert sorted(task.tests) == ["en_XX"]  # English is always tested
    assert task.candidates["de_DE"] == n_de


def test_held_out_texts_copied_from_a_train_family_are_dropped():
    """src3 (valid) and src4 (test) copy the description of src0 (train), as a renamed source
    package would; the split rule cannot see that, the prefix rule drops them."""
    copied = "games engine of the first kind, with a long text that goes on and on and on, " * 2
    corpus = {
        "en_XX": [
            rec("old", "pkg:src0", "sound", copied),
            rec("new-valid", "pkg:src3", "games", copied[:100] + " and more"),
            rec("new-test", "pkg:src4", "games", copied[:90]),
            rec("fine", "pkg:src4", "games", "games of another kind"),
        ],
        "de_DE": [rec("new-test", "pkg:src4", "games", copied[:90])],  # no German src0 text
    }
    task = build(corpus)
    assert [r["package"] for r in task.valid] == []
    assert [r["package"] for r in task.tests["en_XX"]] == ["fine"]
    assert [r["package"] for r in task.tests["de_DE"]] == ["new-test"]  # per language
    assert task.near_train == {"valid": ["new-valid"], "test.en_XX": ["new-test"]}
    assert [r["package"] for r in task.train] == ["old"]  # train itself is not filtered


# ------------------------------------------------------------------------ baselines, metrics


def test_naive_bayes_learns_a_separable_toy_set():
    texts = ["goal match football team", "team football league", "guitar song melody",
             "melody drum song", "orbit planet telescope", "telescope star orbit"]  # fmt: skip
    labels = [0, 0, 1, 1, 2, 2]
    model = st.NaiveBayes(0.1).fit(texts, labels, 3)
    assert model.predict(texts) == labels
    assert model.predict(["the FOOTBALL league", "a new Song", "Planets and stars"]) == [0, 1, 2]
    assert model.predict(["zzz qqq"]) in ([0], [1], [2])  # unseen features: the prior decides
    assert model.predict([]) == []
    scores = model.scores(["football"])
    assert scores.shape == (1, 3) and scores[0, 0] > scores[0, 1]


def test_metrics_on_a_hand_computed_example():
    gold = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 0, 2]
    # class 0: tp 1, fp 1, fn 1 -> F1 1/2; class 1: tp 2, fp 1, fn 0 -> 4/5;
    # class 2: tp 1, fp 0, fn 1 -> 2/3
    assert st.accuracy(gold, pred) == pytest.approx(4 / 6)
    assert st.macro_f1(gold, pred) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # a class that is only predicted counts, with F1 0
    assert st.macro_f1([0, 0], [0, 1]) == pytest.approx((2 / 3 + 0) / 2)
    assert st.macro_f1(gold, gold) == 1.0 and st.accuracy(gold, gold) == 1.0
    assert st.majority_class([2, 1, 1, 2, 0]) == 1  # ties: lowest id
    assert st.evaluate(gold, pred) == {"n": 6, "accuracy": 0.6667, "macro_f1": 0.6556}


def test_baselines_and_command_on_a_toy_corpus(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang, records in toy_corpus().items():
        with open(corpus / f"ddtp.{lang}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    out = tmp_path / "tasks" / "sections"
    args = ["--corpus", str(corpus), "--out", str(out), "--min-test", "1"]
    assert st.main(args) == 0
    assert st.main(args) == 0  # replaces the previous output
    assert sorted(p.name for p in out.parent.iterdir()) == ["sections"]  # no temporary folder
    names = sorted(p.name for p in out.iterdir())
    assert names == ["labels.json", "stats.json", "test.de_DE.jsonl", "test.en_XX.jsonl",
                     "train.jsonl", "valid.jsonl"]  # fmt: skip
    assert json.loads((out / "labels.json").read_text()) == list(st.CLASSES)
    lines = (out / "test.de_DE.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"package", "family", "label", "label_id", "lang", "text"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sizes"]["test.de_DE"] == len(lines)
    scores = stats["baselines"]["scores"]
    assert set(scores) == {"valid.en_XX", "test.en_XX", "test.de_DE"}
    assert set(scores["test.de_DE"]) == {"majority", "naive_bayes"}
    assert "source package" in stats["rule"]
    assert stats["classes_below_rule"]["games"] == {"train": 6, "valid": 2, "test": 2}
    assert "naive" not in capsys.readouterr().err


# ------------------------------------------------------------------------ the real corpus


@pytest.mark.skipif(not (CORPUS / "ddtp.en_XX.jsonl").exists(), reason="corpus not built")
def test_real_test_sets_are_not_in_the_pretraining_text():
    """Build the real task and look 50 sampled test texts per language up in the pre-training
    text, `<code>.train.txt`."""
    task = st.build_task(st.read_corpus(CORPUS))
    assert "en_XX" in task.tests and len(task.tests) >= 2
    assert all(len(recs) >= st.MIN_TEST for recs in task.tests.values())
    rng = random.Random(0)
    for lang, records in task.tests.items():
        assert all(r["split"] == "test" for r in records)
        train = (CORPUS / f"{lang}.train.txt").read_bytes()
        sample = rng.sample(records, min(50, len(records)))
        leaked = [r["package"] for r in sample if r["text"].encode("utf-8") in train]
        assert not leaked, f"{lang}: test texts in the pre-training text: {leaked}"
