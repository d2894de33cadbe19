"""The pre-training recipe on real text: the committed corpus sample.

`tests/data/corpus_sample` holds the first documents of 24 languages of the Debian corpus
(`corpus/sample.py`, its record in `SAMPLE.json`). A small unigram vocabulary is trained on it
once per session (`sample_tokenizer`); rows are packed from it with `pack_rows`, one language at
a time. On those rows: packing, language sampling, masking, a few pre-training steps and an
exact resume, where `test_pretraining.py` uses synthetic token ranges.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import CORPUS_SAMPLE, sample_languages

import xmod_jax as xj
from xmod_jax.nn.losses import IGNORE_INDEX
from xmod_jax.train.freezing import freeze_labels
from xmod_jax.train.masking import MaskingSpec, mask_tokens
from xmod_jax.train.mlm_data import (
    MixedLanguageBatches,
    language_probabilities,
    pack_rows,
    padding_fraction,
    read_documents,
    tokenize_documents,
)
from xmod_jax.train.pretrain_init import pretraining_config
from xmod_jax.train.pretraining import HeldOutMLM, PretrainConfig, masking_transform, pretrain
from xmod_jax.train.steps import TrainState, make_train_step

LANGUAGES = sample_languages()
SPLITS = ("train", "valid", "test")
SEQ_LEN = 64
# the upper 0.1% point of chi-square with 23 degrees of freedom (scipy's chi2.ppf(0.999, 23))
CHI2_23_999 = 49.728


@pytest.fixture(scope="module", autouse=True)
def _fewer_xla_passes():
    """XLA's optimization passes cost half the compile time of these tiny programs, and their
    runs are short (as in tests/parallel_checks.py); the other modules compile as before."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def split_documents(code: str, split: str) -> list[str]:
    return read_documents(CORPUS_SAMPLE / f"{code}.{split}.txt")


@pytest.fixture(scope="module")
def documents(sample_tokenizer) -> dict[str, dict[str, list[np.ndarray]]]:
    """{split: {code: token ids of each document}} for the train and valid splits."""

    def tokenized(code: str, split: str) -> list[np.ndarray]:
        encode = lambda text: sample_tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        return tokenize_documents(split_documents(code, split), encode)

    return {split: {c: tokenized(c, split) for c in LANGUAGES} for split in ("train", "valid")}


@pytest.fixture(scope="module")
def rows(documents, sample_tokenizer) -> dict[str, dict[str, np.ndarray]]:
    """{split: {code: packed rows int32 [N, SEQ_LEN]}}, packed per language."""
    t = sample_tokenizer
    ids = dict(bos_id=t.bos_token_id, eos_id=t.eos_token_id, pad_id=t.pad_token_id)
    return {
        split: {code: pack_rows(docs, SEQ_LEN, **ids) for code, docs in by_code.items()}
        for split, by_code in documents.items()
    }


@pytest.fixture(scope="module")
def spec(sample_tokenizer) -> MaskingSpec:
    return MaskingSpec.for_tokenizer(sample_tokenizer)


# ------------------------------------------------------------------ the sample itself


def test_sample_is_small_and_every_language_has_every_split():
    files = sorted(p.name for p in CORPUS_SAMPLE.iterdir())
    expected = sorted(f"{code}.{split}.txt" for code in LANGUAGES for split in SPLITS)
    assert files == sorted([*expected, "SAMPLE.json"])
    assert len(LANGUAGES) == 24 and LANGUAGES == sorted(LANGUAGES)
    size = sum(p.stat().st_size for p in CORPUS_SAMPLE.iterdir())
    assert size <= 2**20, f"the committed sample grew to {size:,} bytes"
    for code in LANGUAGES:
        texts = {split: split_documents(code, split) for split in SPLITS}
        assert all(texts.values()), code
        assert all(len(doc) <= 2000 for docs in texts.values() for doc in docs), code
        # the corpus deduplicates per language and splits by family: no text in two splits
        train, valid, test = (set(texts[s]) for s in SPLITS)
        assert not (train & valid or train & test or valid & test), code


# ------------------------------------------------------------------ packing and sampling


def test_packing_real_text_keeps_each_language_stream_in_order(documents, rows, sample_tokenizer):
    t = sample_tokenizer
    specials = [t.bos_token_id, t.pad_token_id, t.eos_token_id, t.mask_token_id]
    report = []
    for split, by_code in rows.items():
        for code, packed in by_code.items():
            docs = documents[split][code]
            # text never turns into the structural tokens (a literal "<pad>" in a document would)
            assert not any(np.isin(doc, specials).any() for doc in docs), (split, code)
            stream = np.concatenate([np.append(doc, t.eos_token_id) for doc in docs])
            body = packed[:, 1:].ravel()
            assert np.all(packed[:, 0] == t.bos_token_id)
            np.testing.assert_array_equal(body[: len(stream)], stream, err_msg=f"{split} {code}")
            assert np.all(body[len(stream) :] == t.pad_token_id)
            assert not np.any(packed[:-1] == t.pad_token_id), (split, code)
            assert len(body) - len(stream) < SEQ_LEN - 1  # at most one row's worth of padding
            unknown = np.mean(stream == t.unk_token_id)
            assert unknown < 0.1, (split, code, unknown)
        everything = np.concatenate(list(by_code.values()))
        padding = padding_fraction(everything, t.pad_token_id)
        report.append(f"{split} {padding:.2%} of {len(everything)} rows")
        assert padding < len(by_code) / len(everything)  # under a row per language
    assert padding_fraction(np.concatenate(list(rows["train"].values())), t.pad_token_id) < 0.01
    print(f"padding of the packed sample ({SEQ_LEN} tokens a row): {', '.join(report)}")


def test_batches_of_real_rows_keep_each_row_one_language(rows, sample_tokenizer):
    train = rows["train"]
    # adapters in another order than the row arrays, as in a model with more languages
    config = xj.XmodConfig(languages=["xx_XX", *reversed(LANGUAGES)])
    batches = MixedLanguageBatches(
        [train[c] for c in LANGUAGES], config.lang_ids(LANGUAGES), batch_size=32,
        pad_id=sample_tokenizer.pad_token_id, seed=1,
    )  # fmt: skip
    own_rows = {int(config.lang_ids(c)): {r.tobytes() for r in train[c]} for c in LANGUAGES}
    for step in range(40):
        batch = batches.batch(step)
        ids, lang_ids = batch["input_ids"], batch["lang_ids"]
        for row, lang_id in zip(ids, lang_ids, strict=True):
            assert row.tobytes() in own_rows[int(lang_id)], f"step {step}: a foreign row"
        np.testing.assert_array_equal(batch["attention_mask"], ids != sample_tokenizer.pad_token_id)
        assert len(set(lang_ids.tolist())) >= 8, f"step {step} mixes only {set(lang_ids)}"


def chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(np.sum((counts - expected) ** 2 / expected))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_language_frequencies_on_real_rows_follow_alpha(rows, alpha):
    train = [rows["train"][c] for c in LANGUAGES]
    batches = MixedLanguageBatches(train, range(24), batch_size=32, pad_id=1, alpha=alpha, seed=7)
    counts = np.zeros(24)
    for step in range(600):
        counts += np.bincount(batches.batch(step)["lang_ids"], minlength=24)
    sizes = [len(r) for r in train]
    assert chi_square(counts, language_probabilities(sizes, alpha)) < CHI2_23_999
    if alpha == 0.3:  # the sample's row counts differ enough to tell 0.3 from proportional
        assert chi_square(counts, language_probabilities(sizes, 1.0)) > CHI2_23_999


# ------------------------------------------------------------------ masking


def test_masking_statistics_on_real_rows(rows, spec):
    # every language's first 8 rows and its padded last row
    parts = [np.concatenate([r[:8], r[-1:]]) for r in rows["train"].values()]
    ids = np.concatenate(parts)  # [24 * 9, SEQ_LEN]
    owner = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    specials = np.isin(ids, [*spec.special_ids, spec.mask_id])
    assert (ids == 1).any() and (ids == 3).any(), "the batch should hold pads and <unk>"
    mask = jax.jit(lambda key, ids: mask_tokens(key, ids, spec))
    picked_count = np.zeros(len(parts))
    kinds = {"mask": 0, "random": 0, "kept": 0}
    draws = []
    for seed in range(4):
        masked, positions, labels = map(np.asarray, mask(jax.random.key(seed), ids))
        used = labels != IGNORE_INDEX
        picked = np.zeros(ids.shape, bool)
        np.put_along_axis(picked, positions, used, axis=1)
        assert not np.any(picked & specials), "a special token or pad was picked"
        np.testing.assert_array_equal(masked[~picked], ids[~picked])
        np.testing.assert_array_equal(labels[used], np.take_along_axis(ids, positions, 1)[used])
        new, old = masked[picked], ids[picked]
        kinds["mask"] += np.sum(new == spec.mask_id)
        kinds["kept"] += np.sum(new == old)
        kinds["random"] += np.sum((new != spec.mask_id) & (new != old))
        replaced = new[(new != spec.mask_id) & (new != old)]
        assert not np.isin(replaced, [*spec.special_ids, spec.mask_id]).any()
        picked_count += np.bincount(owner, picked.sum(1), minlength=len(parts))
        draws.append(picked)
    maskable = np.bincount(owner, (~specials).sum(1), minlength=len(parts)) * len(draws)
    rate, rates = picked_count.sum() / maskable.sum(), picked_count / maskable
    assert abs(rate - 0.15) < 0.003, rate
    assert np.all(np.abs(rates - 0.15) < 0.01), dict(zip(LANGUAGES, rates.round(3), strict=True))
    total = sum(kinds.values())
    assert abs(kinds["mask"] / total - 0.8) < 0.015, kinds
    assert abs(kinds["random"] / total - 0.1) < 0.012, kinds
    assert abs(kinds["kept"] / total - 0.1) < 0.012, kinds
    # a new key picks other positions: two draws share about 15% of their picks
    overlap = np.sum(draws[0] & draws[1]) / np.sum(draws[0])
    assert overlap < 0.3, overlap


class MaskReporter:
    """A stand-in model for the step: the "loss" is a fingerprint of the positions the step
    picked, so the step's metrics show which masks it drew."""

    def apply(self, variables, **inputs):
        return variables["params"]["w"]

    @staticmethod
    def loss(w, batch):
        used = batch["labels"] != IGNORE_INDEX
        rows = jnp.arange(batch["labels"].shape[0])[:, None]
        code = (batch["logits_positions"] + 1) * (rows + 1)
        return jnp.sum(jnp.where(used, code, 0)).astype(jnp.float32) + 0.0 * jnp.sum(w)


def test_the_step_draws_new_masks_every_step_and_the_same_on_a_replay(rows, spec):
    batch = MixedLanguageBatches(
        [rows["train"][c] for c in LANGUAGES], range(24), batch_size=16, pad_id=1
    ).batch(0)
    params = {"w": jnp.zeros(3)}
    tx = optax.sgd(0.0)
    step = make_train_step(
        MaskReporter(), tx, freeze_labels(params, ((".*", "trainable"),)),
        loss_fn=MaskReporter.loss, prepare_batch=masking_transform(spec),
    )  # fmt: skip

    def fingerprints(seed: int, steps: int = 6) -> list[float]:
        state = TrainState.create(jax.tree.map(jnp.copy, params), tx, seed=seed)
        out = []
        for _ in range(steps):  # the same rows at every step
            state, metrics = step(state, batch)
            out.append(float(metrics["loss"]))
        return out

    first = fingerprints(seed=0)
    assert len(set(first)) == len(first), first
    assert fingerprints(seed=0) == first  # a resumed run redraws the same masks
    assert fingerprints(seed=1) != first


# ------------------------------------------------------------------ pre-training and resume


def tiny_model(vocab_size: int) -> xj.XmodForMaskedLM:
    """The trained architecture (pre-LN, no dropout, 24 adapters), at toy width."""
    config = pretraining_config(
        vocab_size, LANGUAGES, hidden_size=32, num_hidden_layers=1, seq_len=SEQ_LEN,
        num_attention_heads=2, intermediate_size=64,
    )  # fmt: skip
    return xj.XmodForMaskedLM(config)


BUDGET = PretrainConfig(steps=40, learning_rate=3e-3, warmup_steps=4, eval_every=40, log_every=10)
TRAIN_ROWS = 16  # per language: 40 steps of 16 rows go through each language about 1.7 times


def make_batches(rows, model, pad_id: int) -> MixedLanguageBatches:
    train = [rows["train"][c][:TRAIN_ROWS] for c in LANGUAGES]
    return MixedLanguageBatches(train, model.config.lang_ids(LANGUAGES), 16, pad_id=pad_id)


@pytest.fixture(scope="module")
def whole_run(rows, spec, sample_tokenizer, tmp_path_factory):
    """An uninterrupted run of BUDGET on real rows with held-out evaluation at the end:
    (model, initial params, held-out scores before, final state, records)."""
    model = tiny_model(len(sample_tokenizer))
    pad = sample_tokenizer.pad_token_id
    held_out = HeldOutMLM(
        model, {c: r[:4] for c, r in rows["valid"].items()}, spec, pad_id=pad, batch_size=48
    )
    params = model.init_params(0)
    before = held_out.evaluate(params)
    state, records = pretrain(
        model, params, make_batches(rows, model, pad), spec, BUDGET,
        tmp_path_factory.mktemp("whole"), held_out=held_out, progress=False,
    )  # fmt: skip
    return model, params, before, state, records


def test_pretraining_on_real_rows_lowers_the_held_out_loss(whole_run):
    _, _, before, _, records = whole_run
    after = records[-1]["eval"]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] - 1.0, losses
    mean_before = np.mean([before[c]["loss"] for c in LANGUAGES])
    mean_after = np.mean([after[c]["loss"] for c in LANGUAGES])
    assert mean_after < mean_before - 1.0, (mean_before, mean_after)
    improved = [c for c in LANGUAGES if after[c]["loss"] < before[c]["loss"]]
    print(f"held-out loss {mean_before:.2f} -> {mean_after:.2f}, lower in {len(improved)} of 24")
    assert len(improved) >= 18, {c: (before[c]["loss"], after[c]["loss"]) for c in LANGUAGES}


def test_resume_on_real_rows_is_bit_exact(whole_run, rows, spec, sample_tokenizer, tmp_path):
    model, params, _, whole, _ = whole_run
    pad = sample_tokenizer.pad_token_id
    # each call builds its batches afresh, as a restarted process does
    budget = dataclasses.replace(BUDGET, checkpoint_every=20)
    part, _ = pretrain(
        model, params, make_batches(rows, model, pad), spec, budget, tmp_path,
        progress=False, stop_after=13,
    )  # fmt: skip
    assert int(part.step) == 13
    resumed, records = pretrain(
        model, params, make_batches(rows, model, pad), spec, budget, tmp_path, progress=False
    )
    assert int(resumed.step) == BUDGET.steps and records[0]["step"] == 20
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
