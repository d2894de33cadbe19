"""Build a topical classification task from the corpus's DDTP records, for zero-shot transfer.

Command::

    python corpus/section_task.py --corpus data/corpus --out data/tasks/sections [--min-test 100]

A package description is labelled with its package's archive section (games, sound, ...).
Training data is English (``en_XX``) descriptions of packages in the corpus's *train* split,
validation is English descriptions of *valid* packages, and every test set is one language's
descriptions of *test* packages (English too, for the in-language score). The split is a
function of the source package (the *family*) only, so no family is on two sides, and the
test packages are in no language's pre-training text (pre-training read the train split only).

Rules (applied per language and split, in this order):

1. keep the records whose section is one of ``CLASSES`` (all others are dropped);
2. valid and test only: drop the descriptions whose first 80 characters equal those of a
   train-split description of the same language (any section): a renamed source package
   (``soapdenovo2`` in test, ``soapdenovo`` in train) is another family with a copied text,
   which the pre-training read;
3. sort by package and drop exact duplicate texts (first kept);
4. keep at most ``--max-per-family`` descriptions per source package (the first by
   ``sha1(package)``): templated families would otherwise fill a class with near-copies
   (``tesseract-lang``: 161 "tesseract-ocr language files for <language>" descriptions, all
   in the test split; ``freedict``, ``libreoffice-dictionaries``);
5. English train only: keep at most ``--max-per-class`` descriptions per class (the first by
   ``sha1(package)``), so that no class dominates;
6. a language gets a test set when it has at least ``--min-test`` test descriptions left.

Classes (``CLASSES``): topical sections only (no catch-alls such as libs, libdevel, oldlibs,
misc, utils, devel, doc, debug, kernel, metapackages, localization; no programming-language
sections such as python or perl; no desktop sections such as x11, gnome or kde), that have at
least 300 English train, 15 English valid and 20 English test descriptions after rules 1-4.
The table printed by the command (and ``section_counts`` in ``stats.json``) shows the numbers.

Baselines (in ``stats.json``): the majority class of the English train set, and a multinomial
naive Bayes classifier over lowercased word unigrams and character trigrams (within words,
padded with spaces), trained on English train; its smoothing is picked on English valid.
Metrics: accuracy and macro-F1 (mean F1 over the classes that occur in the gold labels or the
predictions; F1 is 0 for a class without a true positive).

Output (written to a temporary folder, then renamed into place): ``train.jsonl``,
``valid.jsonl``, ``test.<code>.jsonl`` with records {"package", "family", "label",
"label_id", "lang", "text"}, ``labels.json`` (the classes in id order) and ``stats.json``.
Standard library and numpy only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Topical sections with >= 300 English train, >= 15 valid and >= 20 test descriptions
# (after the family cap); editors (12 valid), mail (9 test), video (6 test), electronics,
# hamradio and database (<= 8 test) are topical but too small in the held-out splits.
CLASSES = (
    "games",
    "sound",
    "graphics",
    "science",
    "math",
    "net",
    "web",
    "admin",
    "text",
    "fonts",
)
ENGLISH = "en_XX"
SPLITS = ("train", "valid", "test")
MAX_PER_CLASS = 1500
MAX_PER_FAMILY = 3
MIN_TEST = 100
PREFIX = 80  # held-out texts starting like a train-split text (these many characters) go
MIN_CLASS_SIZES = {"train": 300, "valid": 15, "test": 20}  # English, after the family cap
ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0)
SELECTION_RULE = (
    "topical sections (no catch-alls, programming-language or desktop sections) with at least "
    "300 English train, 15 English valid and 20 English test descriptions after the family cap"
)
RULE = (
    "label = archive section of the package (Packages index); only the classes in labels.json "
    "are kept. train = en_XX descriptions of train-split packages, valid = en_XX descriptions "
    "of valid-split packages, test.<code> = <code> descriptions of test-split packages (split "
    "= corpus split, a function of the source package only). Per language and split: sorted by "
    "package, valid/test texts whose first 80 characters equal a train-split text's dropped, "
    "exact duplicate texts dropped (first kept), at most {max_per_family} "
    "descriptions per source package (lowest sha1(package) first); English train capped at "
    "{max_per_class} per class (lowest sha1(package) first); languages with fewer than "
    "{min_test} test descriptions get no test set."
)


def sha1(text: str) -> str:
    """Hex sha1 of ``text`` (UTF-8): the deterministic selection key."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Records and splits (pure functions on lists of dicts).


def select_classes(records: Iterable[dict], classes: Sequence[str], lang: str) -> list[dict]:
    """Task records (package, family, label, label_id, lang, text, split) of the records whose
    section is one of ``classes``; records of any other section are dropped. Sorted by package
    (then text)."""
    ids = {name: i for i, name in enumerate(classes)}
    out = [
        {
            "package": r["package"],
            "family": r["family"],
            "label": r["section"],
            "label_id": ids[r["section"]],
            "lang": lang,
            "text": r["text"],
            "split": r["split"],
        }
        for r in records
        if r.get("section") in ids
    ]
    return sorted(out, key=lambda r: (r["package"], r["text"]))


def dedup(records: Sequence[dict]) -> list[dict]:
    """Drop records whose text is identical to an earlier one (order kept)."""
    seen: set[str] = set()
    out = []
    for r in records:
        if r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    return out


def cap_by(records: Sequence[dict], key: str, limit: int | None) -> list[dict]:
    """At most ``limit`` records per value of ``key`` (those with the lowest sha1(package));
    the survivors keep their order. ``None`` means no cap."""
    if limit is None:
        return list(records)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r[key]].append(i)
    keep = set()
    for idx in groups.values():
        keep.update(sorted(idx, key=lambda i: (sha1(records[i]["package"]), i))[:limit])
    return [r for i, r in enumerate(records) if i in keep]


def cap_per_class(records: Sequence[dict], limit: int | None) -> list[dict]:
    """The balancing cap: at most ``limit`` records per label (lowest sha1(package) first)."""
    return cap_by(records, "label", limit)


def cap_per_family(records: Sequence[dict], limit: int | None) -> list[dict]:
    """At most ``limit`` records per source package (lowest sha1(package) first)."""
    return cap_by(records, "family", limit)


def train_prefixes(records: Iterable[dict]) -> set[str]:
    """The first ``PREFIX`` characters of every train-split description (any section)."""
    return {r["text"][:PREFIX] for r in records if r["split"] == "train"}


def near_train(records: Sequence[dict], prefixes: set[str]) -> list[dict]:
    """The records whose text starts like a train-split description of their language: a
    renamed or versioned source package (``soapdenovo`` / ``soapdenovo2``) is another family,
    so the split rule does not keep its copied description out of the pre-training text."""
    return [r for r in records if r["text"][:PREFIX] in prefixes]


def split_records(
    records: Sequence[dict],
    split: str,
    max_per_family: int | None,
    exclude: set[str] = frozenset(),
) -> list[dict]:
    """The records of one split of one language: sorted, without the records whose text
    starts with a prefix in ``exclude``, deduplicated, family-capped."""
    chosen = sorted(
        (r for r in records if r["split"] == split and r["text"][:PREFIX] not in exclude),
        key=lambda r: (r["package"], r["text"]),
    )
    return cap_per_family(dedup(chosen), max_per_family)


@dataclass
class Task:
    """The built task: English train and valid, and a test set per language."""

    classes: tuple[str, ...]
    train: list[dict]
    valid: list[dict]
    tests: dict[str, list[dict]]
    uncapped_train: int = 0
    candidates: dict[str, int] = field(default_factory=dict)  # test sizes of every language
    near_train: dict[str, list[str]] = field(default_factory=dict)  # dropped packages per set


def check_disjoint(task: Task) -> None:
    """Assert that no family is on two sides of train / valid / test, and that every record
    carries the split of its side."""
    sides = {"train": task.train, "valid": task.valid, "test": sum(task.tests.values(), [])}
    families = {}
    for side, records in sides.items():
        assert all(r["split"] == side for r in records), f"a {side} record from another split"
        families[side] = {r["family"] for r in records}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        both = families[a] & families[b]
        assert not both, f"families in {a} and {b}: {sorted(both)[:5]}"


def check_family_splits(by_lang: dict[str, list[dict]]) -> None:
    """Assert that every family has one split across all languages (the corpus's rule)."""
    split_of: dict[str, str] = {}
    for records in by_lang.values():
        for r in records:
            assert split_of.setdefault(r["family"], r["split"]) == r["split"], (
                f"{r['family']} is in two splits"
            )


def build_task(
    by_lang: dict[str, list[dict]],
    classes: Sequence[str] = CLASSES,
    max_per_class: int | None = MAX_PER_CLASS,
    max_per_family: int | None = MAX_PER_FAMILY,
    min_test: int = MIN_TEST,
) -> Task:
    """The task from raw DDTP records per language ({code: [{"package", "family", "section",
    "split", "text", ...}]}). The output does not depend on the input order."""
    check_family_splits(by_lang)
    selected = {lang: select_classes(recs, classes, lang) for lang, recs in by_lang.items()}
    seen = {lang: train_prefixes(recs) for lang, recs in by_lang.items()}
    english = selected.get(ENGLISH, [])
    train = split_records(english, "train", max_per_family)
    uncapped = len(train)
    train = cap_per_class(train, max_per_class)
    valid = split_records(english, "valid", max_per_family, seen.get(ENGLISH, set()))
    candidates = {
        lang: split_records(recs, "test", max_per_family, seen[lang])
        for lang, recs in selected.items()
    }
    dropped = {"valid": near_train([r for r in english if r["split"] == "valid"], seen[ENGLISH])}
    for lang, recs in sorted(selected.items()):
        dropped[f"test.{lang}"] = near_train([r for r in recs if r["split"] == "test"], seen[lang])
    tests = {
        lang: recs
        for lang, recs in sorted(candidates.items())
        if lang == ENGLISH or len(recs) >= min_test
    }
    task = Task(
        classes=tuple(classes),
        train=train,
        valid=valid,
        tests=tests,
        uncapped_train=uncapped,
        candidates={lang: len(recs) for lang, recs in sorted(candidates.items())},
        near_train={
            name: sorted(r["package"] for r in recs) for name, recs in dropped.items() if recs
        },
    )
    check_disjoint(task)
    return task


def balance(records: Sequence[dict], classes: Sequence[str]) -> dict[str, int]:
    """Records per class, in class order."""
    counts = Counter(r["label"] for r in records)
    return {name: counts.get(name, 0) for name in classes}


def section_counts(by_lang: dict[str, list[dict]], max_per_family: int | None) -> dict:
    """{split: {section: {lang: descriptions}}} after rules 2-4 (the family cap within the
    section): the numbers behind the choice of ``CLASSES``."""
    out: dict = {split: defaultdict(dict) for split in SPLITS}
    for lang, records in sorted(by_lang.items()):
        seen = train_prefixes(records)
        per_section = defaultdict(list)
        for r in select_classes(records, sorted({r["section"] for r in records}), lang):
            per_section[r["label"]].append(r)
        for name, selected in per_section.items():
            for split in SPLITS:
                exclude = frozenset() if split == "train" else seen
                n = len(split_records(selected, split, max_per_family, exclude))
                if n:
                    out[split][name][lang] = n
    return {split: dict(sorted(per.items())) for split, per in out.items()}


def classes_below_rule(counts: dict, classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """The classes whose English train / valid / test sizes (from ``section_counts``) fall
    below ``MIN_CLASS_SIZES``, with those sizes (empty when the choice follows the rule)."""
    out = {}
    for name in classes:
        sizes = {s: counts[s].get(name, {}).get(ENGLISH, 0) for s in SPLITS}
        if any(sizes[s] < MIN_CLASS_SIZES[s] for s in SPLITS):
            out[name] = sizes
    return out


# ---------------------------------------------------------------------------------------------
# Bag-of-words naive Bayes and metrics.

WORD = re.compile(r"\w+")


def features(text: str) -> Counter:
    """Lowercased word unigrams (``w:``) and character trigrams within space-padded words
    (``c:``), with their counts."""
    out: Counter = Counter()
    for word in WORD.findall(text.lower()):
        out["w:" + word] += 1
        padded = f" {word} "
        for i in range(len(padded) - 2):
            out["c:" + padded[i : i + 3]] += 1
    return out


@dataclass
class NaiveBayes:
    """Multinomial naive Bayes with additive smoothing ``alpha`` and empirical class priors.
    Features unseen in training are ignored at prediction time."""

    alpha: float = 0.1
    vocab: dict[str, int] = field(default_factory=dict)
    counts: np.ndarray | None = None  # (classes, vocab) feature counts of the training set
    log_prior: np.ndarray | None = None
    log_prob: np.ndarray | None = None  # (classes, vocab)

    def fit(self, texts: Sequence[str], labels: Sequence[int], n_classes: int) -> NaiveBayes:
        """Count features per class (vocabulary in first-seen order) and smooth."""
        feats = [features(t) for t in texts]
        for f in feats:
            for name in f:
                self.vocab.setdefault(name, len(self.vocab))
        self.counts = np.zeros((n_classes, len(self.vocab)))
        for (ids, n), y in zip(self.encode(texts, feats), labels, strict=True):
            self.counts[y, ids] += n
        docs = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
        self.log_prior = np.log((docs + 1.0) / (docs.sum() + n_classes))
        return self.smooth(self.alpha)

    def smooth(self, alpha: float) -> NaiveBayes:
        """Set the smoothing (the counts are kept, so trying several is cheap)."""
        self.alpha = alpha
        smoothed = self.counts + alpha
        self.log_prob = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        return self

    def encode(self, texts: Sequence[str], feats: Sequence[Counter] | None = None) -> list:
        """Per text: (vocabulary ids, counts) of its known features."""
        out = []
        for f in feats if feats is not None else map(features, texts):
            known = [(self.vocab[k], n) for k, n in f.items() if k in self.vocab]
            ids = np.fromiter((i for i, _ in known), dtype=np.int64, count=len(known))
            out.append(
                (ids, np.fromiter((n for _, n in known), dtype=np.float64, count=len(known)))
            )
        return out

    def scores(self, texts: Sequence[str] | None = None, encoded: list | None = None) -> np.ndarray:
        """Joint log-likelihoods, (documents, classes), of ``texts`` or of their encoding."""
        encoded = self.encode(texts) if encoded is None else encoded
        out = np.tile(self.log_prior, (len(encoded), 1))
        for i, (ids, n) in enumerate(encoded):
            out[i] += self.log_prob[:, ids] @ n
        return out

    def predict(self, texts: Sequence[str] | None = None, encoded: list | None = None) -> list[int]:
        """The highest-scoring class per text (lowest id on ties)."""
        scores = self.scores(texts, encoded)
        return [int(i) for i in np.argmax(scores, axis=1)] if len(scores) else []


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Fraction of equal labels (0.0 for no examples)."""
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold) if gold else 0.0


def macro_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Mean F1 over the classes that occur in ``gold`` or ``pred``; a class without a true
    positive has F1 0."""
    pairs = list(zip(gold, pred, strict=True))
    scores = []
    for c in sorted(set(gold) | set(pred)):
        tp = sum(g == c and p == c for g, p in pairs)
        fp = sum(g != c and p == c for g, p in pairs)
        fn = sum(g == c and p != c for g, p in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def majority_class(labels: Sequence[int]) -> int:
    """The most frequent label (lowest id on ties)."""
    counts = Counter(labels)
    return min(counts, key=lambda c: (-counts[c], c))


def evaluate(gold: Sequence[int], pred: Sequence[int]) -> dict:
    """Accuracy and macro-F1, rounded, and the number of examples."""
    return {
        "n": len(gold),
        "accuracy": round(accuracy(gold, pred), 4),
        "macro_f1": round(macro_f1(gold, pred), 4),
    }


def baselines(task: Task, alphas: Sequence[float] = ALPHAS) -> dict:
    """Majority class and naive Bayes (smoothing picked by English valid macro-F1), trained on
    English train, scored on English valid and every test set."""
    texts = [r["text"] for r in task.train]
    labels = [r["label_id"] for r in task.train]
    n = len(task.classes)
    majority = majority_class(labels)
    valid_gold = [r["label_id"] for r in task.valid]
    model = NaiveBayes().fit(texts, labels, n)
    valid = model.encode([r["text"] for r in task.valid])
    tried = {a: macro_f1(valid_gold, model.smooth(a).predict(encoded=valid)) for a in alphas}
    best = max(alphas, key=lambda a: (tried[a], -a))
    model.smooth(best)
    sets = {"valid." + ENGLISH: task.valid} | {f"test.{k}": v for k, v in task.tests.items()}
    scores = {}
    for name, records in sets.items():
        gold = [r["label_id"] for r in records]
        scores[name] = {
            "majority": evaluate(gold, [majority] * len(gold)),
            "naive_bayes": evaluate(gold, model.predict([r["text"] for r in records])),
        }
    return {
        "majority": {"class": task.classes[majority], "rule": "most frequent class of train"},
        "naive_bayes": {
            "model": "multinomial naive Bayes, empirical class priors",
            "features": "lowercased \\w+ word unigrams + character trigrams of space-padded words",
            "alpha": best,
            "valid_macro_f1_by_alpha": {str(a): round(v, 4) for a, v in tried.items()},
            "vocabulary": len(model.vocab),
        },
        "scores": scores,
    }


# ---------------------------------------------------------------------------------------------
# Files.


def read_corpus(corpus: Path) -> dict[str, list[dict]]:
    """{code: records} from ``corpus/ddtp.<code>.jsonl``."""
    out = {}
    for path in sorted(corpus.glob("ddtp.*.jsonl")):
        with open(path, encoding="utf-8") as f:
            out[path.name.split(".")[1]] = [json.loads(line) for line in f if line.strip()]
    if ENGLISH not in out:
        raise SystemExit(f"{corpus}: no ddtp.{ENGLISH}.jsonl (build the corpus first)")
    return out


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Task records (without the internal ``split`` field), one JSON object per line."""
    keys = ("package", "family", "label", "label_id", "lang", "text")
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({k: r[k] for k in keys}, ensure_ascii=False) + "\n")


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an older one there."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def same_as_english(task: Task) -> dict[str, int]:
    """Per test language: descriptions identical to the English test text of the package
    (untranslated descriptions), which a bag-of-words model transfers for free."""
    english = {r["package"]: r["text"] for r in task.tests.get(ENGLISH, [])}
    return {
        lang: sum(english.get(r["package"]) == r["text"] for r in records)
        for lang, records in task.tests.items()
        if lang != ENGLISH
    }


def make_stats(task: Task, counts: dict, base: dict, args: argparse.Namespace) -> dict:
    """Everything ``stats.json`` records."""
    sets = {"train": task.train, "valid": task.valid} | {
        f"test.{lang}": recs for lang, recs in task.tests.items()
    }
    return {
        "rule": RULE.format(**vars(args)),
        "classes": list(task.classes),
        "class_rule": SELECTION_RULE,
        "classes_below_rule": classes_below_rule(counts, task.classes),
        "options": {k: vars(args)[k] for k in ("max_per_class", "max_per_family", "min_test")},
        "sizes": {name: len(recs) for name, recs in sets.items()},
        "train_before_class_cap": task.uncapped_train,
        "class_balance": {name: balance(recs, task.classes) for name, recs in sets.items()},
        "test_candidates": task.candidates,
        "dropped_near_train": task.near_train,
        "test_same_text_as_english": same_as_english(task),
        "baselines": base,
        "section_counts": counts,
    }


def print_counts(counts: dict, classes: Sequence[str]) -> None:
    """Per section: English train/valid/test and the test counts of languages with any
    test-split description; chosen classes marked with ``*``."""
    english = {s: {n: counts[s].get(n, {}).get(ENGLISH, 0) for n in counts[s]} for s in SPLITS}
    langs = sorted({lang for per in counts["test"].values() for lang in per} - {ENGLISH})
    langs = [
        lang for lang in langs if sum(per.get(lang, 0) for per in counts["test"].values()) >= 20
    ]
    rows = sorted(english["train"], key=lambda n: -english["train"][n])
    rows = [n for n in rows if english["train"][n] >= 100 or n in classes]
    print(
        "descriptions per section (family cap within section); en: train/valid/test, others: test"
    )
    print(f"{'section':14}{'en:tr':>7}{'va':>5}{'te':>5}" + "".join(f"{x[:5]:>6}" for x in langs))
    for name in rows:
        mark = "*" if name in classes else " "
        row = f"{mark}{name:13}{english['train'][name]:>7}"
        row += f"{english['valid'].get(name, 0):>5}{english['test'].get(name, 0):>5}"
        row += "".join(f"{counts['test'].get(name, {}).get(x, 0):>6}" for x in langs)
        print(row)


def print_results(stats: dict) -> None:
    """Sizes, class balance and baselines per set."""
    classes = stats["classes"]
    print(f"\n{'set':14}{'n':>6}" + "".join(f"{c[:6]:>7}" for c in classes))
    for name, bal in stats["class_balance"].items():
        print(f"{name:14}{stats['sizes'][name]:>6}" + "".join(f"{bal[c]:>7}" for c in classes))
    print(f"\n{'set':14}{'n':>6}{'maj acc':>9}{'maj F1':>8}{'NB acc':>8}{'NB F1':>8}{'=en':>6}")
    same = stats["test_same_text_as_english"]
    for name, s in stats["baselines"]["scores"].items():
        m, b = s["majority"], s["naive_bayes"]
        lang = name.split(".", 1)[1]
        row = f"{name:14}{m['n']:>6}{m['accuracy']:>9.3f}{m['macro_f1']:>8.3f}"
        print(row + f"{b['accuracy']:>8.3f}{b['macro_f1']:>8.3f}{same.get(lang, ''):>6}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--min-test", type=int, default=MIN_TEST, help="smallest test set")
    parser.add_argument("--max-per-class", type=int, default=MAX_PER_CLASS)
    parser.add_argument("--max-per-family", type=int, default=MAX_PER_FAMILY)
    args = parser.parse_args(argv)
    start = time.time()

    by_lang = read_corpus(args.corpus)
    counts = section_counts(by_lang, args.max_per_family)
    print_counts(counts, CLASSES)
    for name, sizes in classes_below_rule(counts, CLASSES).items():
        print(f"warning: class {name} is below the selection rule here: {sizes}")
    task = build_task(by_lang, CLASSES, args.max_per_class, args.max_per_family, args.min_test)
    base = baselines(task)
    stats = make_stats(task, counts, base, args)

    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    write_jsonl(tmp / "train.jsonl", task.train)
    write_jsonl(tmp / "valid.jsonl", task.valid)
    for lang, records in task.tests.items():
        write_jsonl(tmp / f"test.{lang}.jsonl", records)
    (tmp / "labels.json").write_text(json.dumps(list(task.classes), indent=1) + "\n")
    stats["seconds"] = round(time.time() - start, 1)
    text = json.dumps(stats, indent=1, ensure_ascii=False)
    (tmp / "stats.json").write_text(text + "\n", encoding="utf-8")
    replace_dir(tmp, out)
    print_results(stats)
    print(f"\nwrote {out} in {stats['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
