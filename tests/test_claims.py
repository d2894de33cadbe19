"""examples/claims.py end to end at toy size on the corpus sample: the modular and shared
baselines at two language counts, languages added after pre-training (others bit-identical),
and the report."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

import xmod_jax as xj
from xmod_jax.tasks import BUNDLED_TASK_FOLDER

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import claims  # noqa: E402

MANY = ["da_DK", "de_DE", "en_XX", "es_XX", "fr_XX", "it_IT"]
FEW = ["de_DE", "en_XX"]


@pytest.fixture(scope="module")
def claim_runs(tmp_path_factory, sample_tokenizer):
    """Both experiments and the report, run once at toy size; returns (workdir, out, argv)."""
    from helpers import corpus_sample_copy

    root = tmp_path_factory.mktemp("claims")
    corpus = corpus_sample_copy(root / "corpus")
    vocab = root / "vocab"
    sample_tokenizer.save_pretrained(vocab)
    work, out = root / "runs", root / "report"
    argv = [
        "--workdir", str(work), "--out", str(out), "--corpus", str(corpus), "--vocab", str(vocab),
        "--task", str(BUNDLED_TASK_FOLDER), "--few", *FEW, "--many", *MANY,
        "--added", "da_DK:de_DE", "it_IT:es_XX",
        "--steps", "6", "--warmup", "2", "--hidden", "64", "--layers", "1", "--batch", "4",
        "--seq-len", "32", "--eval-every", "3", "--checkpoint-every", "3", "--eval-rows", "2",
        "--test-rows", "3", "--adapt-steps", "4", "--adapt-warmup", "1", "--adapt-eval-every", "2",
        "--seeds", "0", "--ft-steps", "3", "--ft-batch", "8", "--ft-eval-every", "3",
        "--max-length", "16", "--matched-shared",
    ]  # fmt: skip
    claims.main(["modular-vs-shared", *argv])
    claims.main(["post-hoc", *argv])
    claims.main(["report", *argv])
    return work, out, argv


def test_modular_and_shared_runs_are_scored_per_language(claim_runs):
    work, _, _ = claim_runs
    for name, codes in (("modular-6", MANY), ("shared-6", MANY), ("modular-2", FEW),
                        ("shared-2", FEW)):  # fmt: skip
        model = xj.XmodConfig.from_pretrained(work / name / "model")
        expected = ("xx_XX",) if name.startswith("shared") else tuple(codes)
        assert model.languages == expected  # the shared baseline: one adapter for every row
        result = json.loads((work / name / "eval.json").read_text())
        assert sorted(result["mlm"]) == codes
        assert all(r["tokens"] > 0 and np.isfinite(r["loss"]) for r in result["mlm"].values())
        # every language of the run that has a test set in the task (all but es_XX)
        [seed] = result["transfer"]["seeds"]
        assert sorted(seed) == [c for c in codes if c != "es_XX"]
    # the same text and masks, through different models: different losses
    modular = json.loads((work / "modular-6" / "eval.json").read_text())["mlm"]
    shared = json.loads((work / "shared-6" / "eval.json").read_text())["mlm"]
    assert {c: modular[c]["tokens"] for c in MANY} == {c: shared[c]["tokens"] for c in MANY}
    assert modular["en_XX"]["loss"] != shared["en_XX"]["loss"]


def test_the_matched_shared_model_has_the_modular_parameter_count(claim_runs):
    """--matched-shared: one adapter for every row, the FFN widened until the parameters match
    the modular model's (rounded up to whole FFN units: 2 h + 1 parameters per layer)."""
    work, _, _ = claim_runs
    counts = {}
    for name in ("modular-6", "shared-6", "shared-6-matched"):
        model, params = xj.XmodForMaskedLM.from_pretrained(work / name / "model")
        counts[name] = sum(x.size for x in jax.tree.leaves(params))
        assert (model.config.languages == ("xx_XX",)) == name.startswith("shared")
    hidden, layers = 64, 1
    assert counts["shared-6"] < counts["modular-6"]
    assert 0 <= counts["shared-6-matched"] - counts["modular-6"] < layers * (2 * hidden + 1)
    assert sorted(json.loads((work / "shared-6-matched" / "eval.json").read_text())["mlm"]) == MANY


def test_languages_added_later_train_only_their_rows(claim_runs):
    work, _, _ = claim_runs
    before_model, before = xj.XmodForMaskedLM.from_pretrained(work / "without-da-it" / "model")
    after_model, after = xj.XmodForMaskedLM.from_pretrained(work / "adapt-it_IT" / "model")
    old = list(before_model.config.languages)
    assert old == [c for c in MANY if c not in ("da_DK", "it_IT")]
    assert list(after_model.config.languages) == [*old, "da_DK", "it_IT"]
    moved = {}
    for code, source in (("da_DK", "de_DE"), ("it_IT", "es_XX")):
        new, src = after_model.config.lang_ids(code), before_model.config.lang_ids(source)
        kernel = (
            "['roberta']['encoder']['layer_0']['output']['adapter_modules']['dense1']['kernel']"
        )
        trained = dict(claims.leaves_by_path(after))[kernel][new]  # [lang, hidden, bottleneck]
        init = dict(claims.leaves_by_path(before))[kernel][src]
        moved[code] = float(np.abs(np.asarray(trained) - np.asarray(init)).max())
    assert min(moved.values()) > 0  # each new language's rows left their init
    unchanged = json.loads((work / "post-hoc" / "unchanged.json").read_text())
    assert unchanged["logits_bit_identical"] and unchanged["params_bit_identical"]
    result = json.loads((work / "post-hoc" / "eval.json").read_text())
    assert sorted(result["mlm"]) == MANY  # the added languages through their new adapters
    starts = [
        json.loads((work / f"adapt-{c}" / "start.json").read_text()) for c in ("da_DK", "it_IT")
    ]
    assert [s["init_from"] for s in starts] == ["de_DE", "es_XX"]


def test_the_unchanged_check_fails_for_a_changed_model(claim_runs):
    work, _, argv = claim_runs
    args = claims.parse_args(["post-hoc", *argv])
    with pytest.raises(AssertionError, match="other languages changed"):
        claims.outputs_unchanged(
            args, str(work / "without-da-it" / "model"), str(work / "modular-6" / "model"),
            [c for c in MANY if c not in ("da_DK", "it_IT")],
        )  # fmt: skip


def test_stages_are_skipped_once_done_and_the_report_has_every_table(claim_runs):
    work, out, argv = claim_runs
    stamp = (work / "modular-6" / "eval.json").stat().st_mtime_ns
    claims.main(["modular-vs-shared", *argv])  # nothing left to do
    assert (work / "modular-6" / "eval.json").stat().st_mtime_ns == stamp
    text = (out / "claims.md").read_text()
    assert all(f"| {c} |" in text for c in MANY if c not in ("da_DK", "it_IT"))
    assert "| da_DK (added) |" in text and "| it_IT (added) |" in text
    pytest.importorskip("matplotlib")
    assert "ppl shared-6-matched" in text
    for name in ("modular_vs_shared.png", "learning_curves.png", "post_hoc.png"):
        assert (out / name).stat().st_size > 1000
