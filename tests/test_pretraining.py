"""The X-MOD pre-training recipe: masking, packing, language sampling, the step, resume, eval."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xmod_jax as xj
from xmod_jax.nn.losses import IGNORE_INDEX
from xmod_jax.train.masking import MaskingSpec, mask_tokens
from xmod_jax.train.mlm_data import (
    MixedLanguageBatches,
    language_probabilities,
    pack_rows,
    padding_fraction,
)
from xmod_jax.train.pretrain_init import sinusoids, with_local_attention_init
from xmod_jax.train.pretraining import (
    HeldOutMLM,
    PretrainConfig,
    make_pretrain_optimizer,
    pretrain,
    unigram_log_probs,
    with_unigram_output_bias,
)

V = 120
BOS, PAD, EOS, UNK = 0, 1, 2, 3
SPEC = MaskingSpec(
    mask_id=V - 1, vocab_size=V, special_ids=(BOS, PAD, EOS, UNK), first_regular_id=4
)
LANGS = ["en_XX", "de_DE", "fr_XX"]
SPAN = 36  # language i writes tokens 4 + 36 i ... 4 + 36 (i + 1) - 1


def language_documents(seed: int = 0, n: int = 120) -> dict[str, list[np.ndarray]]:
    """Per language, documents over a token range of its own, with a repeated bigram pattern
    (token t is followed by t + 1 half the time) that a model can learn."""
    rng = np.random.default_rng(seed)
    docs = {}
    for i, code in enumerate(LANGS):
        low = 4 + SPAN * i
        docs[code] = []
        for _ in range(n):
            length = int(rng.integers(3, 30))
            doc = rng.integers(low, low + SPAN - 1, length)
            doc[1::2] = doc[0::2][: len(doc[1::2])] + 1
            docs[code].append(doc)
    return docs


def packed(seq_len: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    return {
        code: pack_rows(d, seq_len, bos_id=BOS, eos_id=EOS, pad_id=PAD)
        for code, d in language_documents(seed).items()
    }


def tiny_model():
    config = xj.XmodConfig(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        languages=LANGS,
    )
    return xj.XmodForMaskedLM(config)


# ------------------------------------------------------------------ masking


def sample_ids(batch=64, seq_len=64, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, V - 1, (batch, seq_len)).astype(np.int32)
    ids[:, 0] = BOS
    ids[:, -1] = EOS
    lengths = rng.integers(10, seq_len, batch)
    for row, n in zip(ids, lengths, strict=True):
        row[n - 1] = EOS
        row[n:] = PAD
    ids[::7, 5] = UNK
    return jnp.asarray(ids)


def test_masking_rate_and_80_10_10():
    ids = sample_ids(batch=512)
    masked, positions, labels = mask_tokens(jax.random.key(0), ids, SPEC)
    ids, masked, positions, labels = map(np.asarray, (ids, masked, positions, labels))
    regular = ~np.isin(ids, [BOS, PAD, EOS, UNK])
    used = labels != IGNORE_INDEX
    rate = used.sum() / regular.sum()
    assert abs(rate - 0.15) < 0.005, rate
    rows = np.arange(len(ids))[:, None]
    # labels are the original tokens at the picked positions; positions are distinct per row
    np.testing.assert_array_equal(labels[used], ids[rows, positions][used])
    for p, u in zip(positions, used, strict=True):
        assert len(set(p[u])) == u.sum()
    new = masked[rows, positions][used]
    orig = ids[rows, positions][used]
    share_mask = np.mean(new == SPEC.mask_id)
    share_kept = np.mean(new == orig)
    share_random = 1 - share_mask - share_kept
    assert abs(share_mask - 0.8) < 0.02 and abs(share_kept - 0.1) < 0.02, (share_mask, share_kept)
    assert abs(share_random - 0.1) < 0.02
    # nothing outside the picked positions changed
    changed = masked != ids
    picked = np.zeros_like(changed)
    np.put_along_axis(picked, positions, used, axis=1)
    assert not np.any(changed & ~picked)
    # random replacements are regular tokens
    replaced = new[(new != SPEC.mask_id) & (new != orig)]
    assert np.all((replaced >= 4) & (replaced < V - 1))


def test_specials_and_padding_are_never_masked():
    ids = sample_ids(batch=256)
    for seed in range(5):
        masked, positions, labels = map(np.asarray, mask_tokens(jax.random.key(seed), ids, SPEC))
        used = labels != IGNORE_INDEX
        originals = np.take_along_axis(np.asarray(ids), positions, axis=1)[used]
        assert not np.isin(originals, [BOS, PAD, EOS, UNK]).any()
        special = np.isin(np.asarray(ids), [BOS, PAD, EOS, UNK])
        np.testing.assert_array_equal(masked[special], np.asarray(ids)[special])


def test_masks_differ_between_steps_and_repeat_for_one_key():
    ids = sample_ids()
    a = mask_tokens(jax.random.key(1), ids, SPEC)
    b = mask_tokens(jax.random.key(2), ids, SPEC)
    again = mask_tokens(jax.random.key(1), ids, SPEC)
    assert not np.array_equal(a[1], b[1])
    for x, y in zip(a, again, strict=True):
        np.testing.assert_array_equal(x, y)


def test_row_without_maskable_tokens_masks_nothing():
    ids = jnp.asarray([[BOS, EOS, PAD, PAD], [BOS, 10, 11, EOS]], jnp.int32)
    masked, _, labels = mask_tokens(jax.random.key(0), ids, SPEC)
    assert np.all(np.asarray(labels)[0] == IGNORE_INDEX)
    np.testing.assert_array_equal(np.asarray(masked)[0], np.asarray(ids)[0])


def test_masking_spec_refuses_bad_settings():
    with pytest.raises(ValueError, match="masking rate"):
        MaskingSpec(mask_id=9, vocab_size=10, special_ids=(0,), first_regular_id=1, rate=1.5)
    with pytest.raises(ValueError, match="exceeds 1"):
        MaskingSpec(
            mask_id=9, vocab_size=10, special_ids=(0,), first_regular_id=1, mask_fraction=0.95
        )


def test_spec_from_tokenizer(tmp_path):
    from helpers import train_tokenizer

    tokenizer = train_tokenizer(tmp_path)
    spec = MaskingSpec.for_tokenizer(tokenizer)
    assert spec.mask_id == len(tokenizer) - 1 == spec.vocab_size - 1
    assert spec.special_ids == (0, 1, 2, 3) and spec.first_regular_id == 4


# ------------------------------------------------------------------ packing and sampling


def test_packing_keeps_order_and_pads_only_the_last_row():
    docs = [np.arange(10, 15), np.arange(20, 23), np.arange(30, 40)]
    rows = pack_rows(docs, 8, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert rows.shape == (3, 8) and np.all(rows[:, 0] == BOS)
    stream = rows[:, 1:].ravel()
    expected = [*range(10, 15), EOS, *range(20, 23), EOS, *range(30, 40), EOS]
    np.testing.assert_array_equal(stream[: len(expected)], expected)
    assert np.all(stream[len(expected) :] == PAD) and not np.any(rows[:-1] == PAD)
    assert padding_fraction(rows, PAD) == pytest.approx(np.mean(rows == PAD))


def test_probabilities_follow_alpha():
    sizes = [1000, 100, 10]
    np.testing.assert_allclose(language_probabilities(sizes, 1.0), np.array(sizes) / 1110)
    np.testing.assert_allclose(language_probabilities(sizes, 0.0), [1 / 3] * 3)
    p = language_probabilities(sizes, 0.3)
    np.testing.assert_allclose(p[0] / p[1], 10**0.3)
    with pytest.raises(ValueError, match="positive"):
        language_probabilities([1, 0])


def test_batches_mix_languages_and_sampling_follows_alpha():
    rows = packed()
    sizes = [len(rows[c]) for c in LANGS]
    batches = MixedLanguageBatches(
        [rows[c] for c in LANGS], [7, 8, 9], batch_size=32, pad_id=PAD, alpha=0.3, seed=3
    )
    counts = np.zeros(3)
    for step in range(300):
        batch = batches.batch(step)
        ids, lang_ids = batch["input_ids"], batch["lang_ids"]
        for row, lang_id in zip(ids, lang_ids, strict=True):
            i = lang_id - 7
            regular = row[~np.isin(row, [BOS, PAD, EOS])]
            low = 4 + SPAN * i
            assert np.all((regular >= low) & (regular < low + SPAN)), "a row mixes languages"
        counts += np.bincount(lang_ids - 7, minlength=3)
        if step == 0:
            assert len(set(lang_ids)) > 1, "a batch holds one language only"
            np.testing.assert_array_equal(batch["attention_mask"], ids != PAD)
    expected = language_probabilities(sizes, 0.3)
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.015)


def test_batches_are_a_function_of_seed_and_step_and_visit_every_row():
    rows = packed()
    make = lambda: MixedLanguageBatches(  # noqa: E731
        [rows[c] for c in LANGS], [0, 1, 2], batch_size=8, pad_id=PAD, seed=5
    )
    first, second = make(), make()
    for step in range(40):
        first.batch(step)
    np.testing.assert_array_equal(first.batch(41)["input_ids"], second.batch(41)["input_ids"])
    # one epoch of a language visits each of its rows once
    seen = {i: [] for i in range(3)}
    for step in range(60):
        b = first.batch(step)
        for row, lang in zip(b["input_ids"], b["lang_ids"], strict=True):
            seen[int(lang)].append(row.tobytes())
    for i, code in enumerate(LANGS):
        n = len(rows[code])
        head = seen[i][:n]
        assert len(set(head)) == len({r.tobytes() for r in rows[code]}), code


# ------------------------------------------------------------------ the step, resume and eval


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    rows = packed(seq_len=24)
    held = {c: r[:12] for c, r in packed(seq_len=24, seed=9).items()}
    batches = MixedLanguageBatches(
        [rows[c] for c in LANGS], [0, 1, 2], batch_size=16, pad_id=PAD, seed=0
    )
    return model, rows, held, batches


def test_pretraining_lowers_the_held_out_loss(setup, tmp_path):
    model, rows, held, batches = setup
    held_out = HeldOutMLM(model, held, SPEC, pad_id=PAD, batch_size=8)
    params = model.init_params(0)
    before = held_out.evaluate(params)
    config = PretrainConfig(steps=150, learning_rate=3e-3, warmup_steps=10, eval_every=150)
    state, records = pretrain(
        model, params, batches, SPEC, config, tmp_path, held_out=held_out, progress=False
    )
    after = records[-1]["eval"]
    for code in LANGS:
        assert after[code]["loss"] < before[code]["loss"] - 0.5, (code, before, after)
        assert after[code]["tokens"] == before[code]["tokens"] > 0
    assert records[0]["loss"] > records[-2]["loss"]
    # shuffled-context losses are logged beside the plain ones (this tiny model, like
    # transformers' torch model trained the same way, stays on the unigram plateau: gain ~0)
    assert all(abs(after[code]["context_gain"]) < after[code]["loss"] for code in LANGS)
    assert all(0 <= r["data_fraction"] < 1 for r in records if "data_fraction" in r)
    # the same fixed masks: evaluating twice gives the same numbers
    plain = {code: {k: v for k, v in r.items() if k != "context_gain"} for code, r in after.items()}
    assert held_out.evaluate(state.params) == plain
    # the language's own adapter, trained on its text, beats a foreign one on it
    own = after["de_DE"]["loss"]
    foreign = held_out.evaluate(state.params, adapter="fr_XX")["de_DE"]["loss"]
    assert own < foreign
    texts, adapters, matrix = held_out.adapter_matrix(state.params)
    assert matrix.shape == (3, 3) and adapters == LANGS
    np.testing.assert_allclose(matrix[texts.index("de_DE"), 1], own, rtol=1e-6)
    baseline = held_out.unigram_baseline(rows)
    assert set(baseline) == set(LANGS)
    assert all(0 < b["perplexity"] < V for b in baseline.values())


def test_resume_is_bit_exact(setup, tmp_path):
    model, _, _, batches = setup
    params = model.init_params(1)
    config = PretrainConfig(steps=24, warmup_steps=4, checkpoint_every=8, log_every=4)
    whole, _ = pretrain(model, params, batches, SPEC, config, tmp_path / "a", progress=False)
    part, _ = pretrain(
        model, params, batches, SPEC, config, tmp_path / "b", progress=False, stop_after=10
    )
    assert int(part.step) == 10
    # resumes from the last checkpoint (step 10), replaying the same batches and masks
    resumed, records = pretrain(
        model, params, batches, SPEC, config, tmp_path / "b", progress=False
    )
    assert int(resumed.step) == 24 and records[0]["step"] == 12
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    log = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    assert [int(x.split('"step": ')[1].split(",")[0]) for x in log] == [4, 8, 10, 12, 16, 20, 24]


def test_language_adaptation_trains_only_the_new_languages_rows(setup, tmp_path):
    """After pre-training without fr_XX, add it (rows copied from de_DE) and train only its
    adapter rows on French text: its held-out loss falls, and every other parameter, hence
    every other language's output, stays bit-identical."""
    model, rows, held, _ = setup
    two, pretrained = xj.select_languages(model.config, model.init_params(2), ["en_XX", "de_DE"])
    config, params = xj.add_language(two, pretrained, "fr_XX", init_from="de_DE")
    assert config.languages == model.config.languages  # the same model as the fixture's
    french = MixedLanguageBatches([rows["fr_XX"]], [2], batch_size=8, pad_id=PAD, seed=0)
    held_out = HeldOutMLM(model, held, SPEC, pad_id=PAD, batch_size=8)
    before = held_out.evaluate(params)
    adapt = PretrainConfig(
        steps=60,
        learning_rate=1e-2,
        warmup_steps=4,
        eval_every=60,
        freeze=("new_language", "fr_XX"),
    )
    state, records = pretrain(
        model, params, french, SPEC, adapt, tmp_path, held_out=held_out, progress=False
    )
    after = records[-1]["eval"]
    assert after["fr_XX"]["loss"] < before["fr_XX"]["loss"] - 0.1
    for code in ("en_XX", "de_DE"):
        assert after[code]["loss"] == before[code]["loss"]
    moved = []
    for (path, new), old in zip(
        jax.tree_util.tree_leaves_with_path(state.params), jax.tree.leaves(params), strict=True
    ):
        new, old = np.asarray(new), np.asarray(old)
        if "adapter_modules" in jax.tree_util.keystr(path):
            np.testing.assert_array_equal(new[:2], old[:2])  # en_XX and de_DE rows
            moved.append(not np.array_equal(new[2], old[2]))
        else:
            np.testing.assert_array_equal(new, old)
    assert moved and all(moved)


def test_held_out_routes_languages_to_named_adapters(setup):
    """`adapters=` sends a language's rows through another adapter (a shared baseline's one
    adapter): the same numbers as `evaluate(adapter=...)`; unknown adapters fail at once."""
    model, _, held, _ = setup
    params = model.init_params(3)
    routed = HeldOutMLM(model, held, SPEC, pad_id=PAD, adapters=dict.fromkeys(LANGS, "de_DE"))
    plain = HeldOutMLM(model, held, SPEC, pad_id=PAD)
    assert routed.evaluate(params) == plain.evaluate(params, adapter="de_DE")
    assert routed.evaluate(params) != plain.evaluate(params)
    with pytest.raises(ValueError, match="unknown language 'xx_XX'"):
        HeldOutMLM(model, held, SPEC, pad_id=PAD, adapters={"en_XX": "xx_XX"})


def test_held_out_mask_seeds_by_language_keep_masks_across_subsets(setup):
    """seed={code: seed}: a language's masked positions do not depend on which other languages
    the set holds (by index, they shift); a language without a seed fails at once."""
    model, _, held, _ = setup
    seeds = {code: 100 + n for n, code in enumerate(sorted(held))}
    last = sorted(held)[-1]
    alone = HeldOutMLM(model, {last: held[last]}, SPEC, pad_id=PAD, seed=seeds)
    together = HeldOutMLM(model, held, SPEC, pad_id=PAD, seed=seeds)
    by_index = HeldOutMLM(model, {last: held[last]}, SPEC, pad_id=PAD, seed=100)
    for key in ("input_ids", "labels", "logits_positions"):
        np.testing.assert_array_equal(alone.sets[last][key], together.sets[last][key])
    assert not np.array_equal(alone.sets[last]["labels"], by_index.sets[last]["labels"])
    with pytest.raises(ValueError, match=f"no mask seed for \\['{last}'\\]"):
        HeldOutMLM(model, {last: held[last]}, SPEC, pad_id=PAD, seed={"xx": 1})


def test_pretrain_config_refuses_bad_budgets():
    with pytest.raises(ValueError, match="must exceed warmup_steps"):
        PretrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="eval_every"):
        PretrainConfig(steps=10, warmup_steps=1, eval_every=0)
    with pytest.raises(ValueError, match="decay_fraction"):
        PretrainConfig(steps=10, warmup_steps=1, decay_fraction=0.0)


def test_pretrain_schedule_holds_the_peak_then_decays():
    # a bias (no weight decay) under a constant unit gradient: Adam's step is -lr exactly
    params = {"bias": jnp.zeros(1)}
    config = PretrainConfig(steps=110, learning_rate=1.0, warmup_steps=10, decay_fraction=0.2)
    tx = make_pretrain_optimizer(params, config)
    state, steps = tx.init(params), []
    for _ in range(config.steps):
        update, state = tx.update({"bias": jnp.ones(1)}, state, params)
        steps.append(-float(update["bias"][0]))
    np.testing.assert_allclose(
        [steps[s] for s in (5, 10, 60, 89, 90, 100, 109)],
        [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.05],
        atol=1e-4,
    )


def test_shuffled_context_moves_masks_with_their_tokens(setup):
    model, _, held, _ = setup
    held_out = HeldOutMLM(model, held, SPEC, pad_id=PAD)
    plain, shuffled = held_out._rows, held_out._shuffled_rows
    used = plain["labels"] != IGNORE_INDEX
    shown = np.take_along_axis(shuffled["input_ids"], shuffled["logits_positions"], axis=1)
    assert np.all(shown[used] == SPEC.mask_id)
    np.testing.assert_array_equal(shuffled["labels"], plain["labels"])
    np.testing.assert_array_equal(shuffled["attention_mask"], plain["attention_mask"])
    real = plain["attention_mask"] == 1
    assert np.all(shuffled["input_ids"][:, 0] == BOS)
    np.testing.assert_array_equal(shuffled["input_ids"][~real], plain["input_ids"][~real])
    for a, b in zip(plain["input_ids"], shuffled["input_ids"], strict=True):
        assert sorted(a) == sorted(b)
    assert np.mean(plain["input_ids"][real] != shuffled["input_ids"][real]) > 0.5


def test_held_out_masks_are_all_mask_tokens(setup):
    model, _, held, _ = setup
    held_out = HeldOutMLM(model, held, SPEC, pad_id=PAD)
    for code, data in held_out.sets.items():
        used = data["labels"] != IGNORE_INDEX
        shown = np.take_along_axis(data["input_ids"], data["logits_positions"], axis=1)
        assert used.sum() > 0 and np.all(shown[used] == SPEC.mask_id), code
        unpicked = np.ones_like(data["input_ids"], bool)
        np.put_along_axis(unpicked, data["logits_positions"], ~used, axis=1)
        np.testing.assert_array_equal(data["input_ids"][unpicked], held[code][unpicked])


def test_unigram_output_bias_starts_at_the_unigram_distribution(setup):
    model, rows, _, _ = setup
    log_probs = unigram_log_probs(rows, SPEC)
    counts = sum(np.bincount(r.ravel(), minlength=V) for r in rows.values())
    regular = np.arange(V) >= SPEC.first_regular_id
    regular[SPEC.mask_id] = False
    expected = np.log((counts + 1.0) / (counts[regular] + 1.0).sum() / 1.0)
    # ranks of the regular tokens follow their counts; specials sit at the bottom
    assert np.argmax(log_probs) == np.argmax(np.where(regular, counts, -1))
    assert log_probs[SPEC.mask_id] == log_probs.min() and log_probs[BOS] == log_probs.min()
    np.testing.assert_allclose(np.exp(log_probs).sum(), 1.0, rtol=1e-5)
    assert np.corrcoef(log_probs[regular], expected[regular])[0, 1] > 0.999
    params = with_unigram_output_bias(model.init_params(0), log_probs)
    bias = np.asarray(params["lm_head"]["bias"])
    np.testing.assert_allclose(bias, log_probs - log_probs.mean(), rtol=1e-6, atol=1e-6)
    # a fresh model with that bias predicts about the unigram distribution (108 tokens in use of
    # 120): its held-out loss starts below the fresh model's, near log(108)
    held_out = HeldOutMLM(model, rows, SPEC, pad_id=PAD)
    fresh, biased = (
        np.mean([r["loss"] for r in held_out.evaluate(p).values()])
        for p in (model.init_params(0), params)
    )
    assert biased < fresh - 0.08 and abs(biased - np.log(3 * SPAN)) < 0.05, (fresh, biased)
    with pytest.raises(ValueError, match="do not fit"):
        with_unigram_output_bias(params, log_probs[:-1])


def local_model(hidden=256, heads=4):
    config = xj.XmodConfig(
        vocab_size=V, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
        intermediate_size=hidden, max_position_embeddings=66, type_vocab_size=1,
        layer_norm_eps=1e-5, pre_norm=True, languages=LANGS,
    )  # fmt: skip
    return xj.XmodForMaskedLM(config)


def test_local_attention_init_writes_sinusoids_and_only_query_key_kernels():
    model = local_model()
    params = model.init_params(0)
    local = with_local_attention_init(params, PAD, position_scale=0.05)
    table = np.asarray(local["roberta"]["embeddings"]["position_embeddings"]["embedding"])
    old = np.asarray(params["roberta"]["embeddings"]["position_embeddings"]["embedding"])
    np.testing.assert_array_equal(table[: PAD + 1], old[: PAD + 1])  # never used by tokens
    waves = 0.05 * sinusoids(len(table) - PAD - 1, table.shape[1])
    np.testing.assert_allclose(table[PAD + 1 :], waves, atol=1e-7)
    gram = waves @ waves.T  # sinusoids: p_i . p_j depends on i - j only
    np.testing.assert_allclose(np.diag(gram, 1)[:5], np.diag(gram, 1)[10:15], rtol=1e-4)
    changed = jax.tree_util.tree_map_with_path(
        lambda path, a, b: (jax.tree_util.keystr(path), not np.array_equal(a, b)), params, local
    )
    changed = {
        name
        for name, differs in jax.tree.leaves(changed, is_leaf=lambda x: isinstance(x, tuple))
        if differs
    }
    expected = {"['roberta']['embeddings']['position_embeddings']['embedding']"} | {
        f"['roberta']['encoder']['layer_{i}']['attention']['self']['{qk}']['kernel']"
        for i in range(2) for qk in ("query", "key")
    }  # fmt: skip
    assert changed == expected


def test_local_attention_init_points_each_head_at_its_offset():
    """Why the init exists: with transformers' init a fresh model attends about uniformly, so a
    masked token hears 1/S of its neighbour; after it, head h of every layer looks at the
    position offsets[h] away, masked tokens included."""
    model = local_model()
    ids = jnp.asarray(sample_ids(batch=8, seq_len=64))
    ids = ids.at[:, 10::4].set(SPEC.mask_id)
    lang_ids = model.config.lang_ids(["en_XX"] * 8)
    rows = np.arange(3, 40)  # real tokens in every row (sample_ids rows hold at least 10)

    def share(params, layer: int, head: int, offset: int) -> float:
        out = model.apply({"params": params}, ids, lang_ids=lang_ids, output_attentions=True)
        probs = np.asarray(out.attentions[layer])[:, head]  # [B, S, S]
        return float(np.mean(probs[:, rows, rows + offset]))

    params = model.init_params(0)
    local = with_local_attention_init(params, PAD)
    for head, offset in enumerate((-1, 1, -2, 2)):
        assert share(params, 0, head, offset) < 0.05  # about 1 / 64
        for layer in (0, 1):
            assert share(local, layer, head, offset) > 0.5, (layer, head, offset)
