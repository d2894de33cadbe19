"""Freezing, the optimizer, pure train/eval steps and train-state checkpoints."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import TINY, hf_config, needs_torch, random_params, transformers

import xmod_jax as xj
from xmod_jax.ckpts.mapping import params_to_hf
from xmod_jax.train.steps import batch_indices, merge, partition

CONFIG = xj.XmodConfig(**TINY, adapter_layer_norm=True, num_labels=3)
rng = np.random.default_rng(0)
BATCH = {
    "input_ids": np.concatenate([np.zeros((8, 1), int), rng.integers(4, 99, (8, 9))], axis=1),
    "lang_ids": np.zeros(8, np.int32),
    "labels": rng.integers(0, 3, 8),
}


def _leaves(tree):
    return jax.tree.leaves(tree)


def _fresh_state(params, tx, seed=0):
    """A train state on copies: train steps donate (consume) the state's buffers."""
    return xj.TrainState.create(jax.tree.map(jnp.copy, params), tx, seed=seed)


@pytest.fixture(scope="module")
def classifier():
    model = xj.XmodForSequenceClassification(CONFIG)
    return model, random_params(model)


# -------------------------------------------------------------------------------- freezing
def _frozen_hf_names(model, labels):
    """transformers names of the tensors our labels freeze."""
    marks = jax.tree.map(
        lambda p, label: np.full(p.shape, label == "frozen", np.float32),
        model.param_shapes(),
        labels,
    )
    state = params_to_hf(marks, xj.logical_axes(model), model.config.languages)
    assert all(v.min() == v.max() for v in state.values())  # whole tensors, no partial rows
    return {k for k, v in state.items() if v.min() == 1}


@needs_torch
@pytest.mark.parametrize(
    "class_name", ["XmodForMaskedLM", "XmodForSequenceClassification", "XmodForMultipleChoice"]
)
def test_paper_preset_freezes_what_transformers_freezes(class_name):
    reference = getattr(transformers, class_name)(
        hf_config(adapter_layer_norm=True, adapter_reuse_layer_norm=False)
    )
    reference.freeze_embeddings_and_language_adapters()
    theirs = {n for n, p in reference.named_parameters() if not p.requires_grad}
    config = xj.XmodConfig(**TINY, adapter_layer_norm=True, adapter_reuse_layer_norm=False)
    model = getattr(xj, class_name)(config)
    labels = xj.freeze_labels(model.param_shapes(), "xmod_paper")
    assert _frozen_hf_names(model, labels) == theirs
    if class_name == "XmodForMaskedLM":  # the tied decoder is the frozen word table
        assert labels["lm_head"]["dense"]["kernel"] == "trainable"
        assert labels["lm_head"]["bias"] == "trainable"


@needs_torch
def test_paper_preset_works_on_the_bare_encoder():
    model = xj.XmodModel(CONFIG)
    with pytest.raises(AttributeError):  # transformers' method needs a `roberta` submodule
        transformers.XmodModel(hf_config()).freeze_embeddings_and_language_adapters()
    labels = xj.freeze_labels(model.param_shapes(), "xmod_paper")
    assert set(_leaves(labels["embeddings"])) == {"frozen"}
    layer = labels["encoder"]["layer_0"]
    assert set(_leaves(layer["output"]["adapter_modules"])) == {"frozen"}
    assert set(_leaves(layer["output"]["adapter_layer_norm"])) == {"frozen"}
    assert set(_leaves(layer["attention"])) == {"trainable"}
    assert set(_leaves(labels["pooler"])) == {"trainable"}


def test_adapters_only_and_custom_rules(classifier):
    _, params = classifier
    labels = xj.freeze_labels(params, "adapters_only")
    trainable = {
        "/".join(k.key for k in path)
        for path, label in jax.tree_util.tree_leaves_with_path(labels)
        if label == "trainable"
    }
    assert trainable and all("/adapter_modules/" in p for p in trainable)
    rules = [(r"classifier/", "trainable"), (r"layer_1/", "trainable"), (r".*", "frozen")]
    labels = xj.freeze_labels(params, rules)
    assert set(_leaves(labels["classifier"])) == {"trainable"}
    assert set(_leaves(labels["roberta"]["encoder"]["layer_1"])) == {"trainable"}
    assert set(_leaves(labels["roberta"]["encoder"]["layer_0"])) == {"frozen"}
    with pytest.raises(ValueError, match="no freezing rule matches") as err:
        xj.freeze_labels(params, [(r"classifier/", "trainable")])
    assert "roberta/embeddings/word_embeddings/embedding" in str(err.value)
    with pytest.raises(ValueError, match="'trainable' | 'frozen'"):
        xj.freeze_labels(params, [(r".*", "train")])
    with pytest.raises(ValueError, match="needs config"):
        xj.freeze_labels(params, ("new_language", "de_DE"))
    with pytest.raises(ValueError, match="unknown language"):
        xj.freeze_labels(params, ("new_language", "xx_XX"), CONFIG)
    with pytest.raises(ValueError, match="unknown freezing preset"):
        xj.freeze_labels(params, "paper")


# ------------------------------------------------------------------------------- optimizer
def _trainable_bytes(params, labels):
    return sum(
        p.nbytes
        for p, label in zip(_leaves(params), _leaves(labels), strict=True)
        if label == "trainable"
    )


def test_frozen_leaves_have_no_optimizer_state(classifier):
    _, params = classifier
    labels = xj.freeze_labels(params, "xmod_paper")
    for accumulate in (1, 4):
        tx = xj.make_optimizer(params, learning_rate=1e-3, accumulate_steps=accumulate)
        state_bytes = sum(x.nbytes for x in _leaves(tx.init(params)))
        budget = (2 if accumulate == 1 else 3) * _trainable_bytes(params, labels)
        assert budget <= state_bytes <= budget + 64  # Adam moments (+ accumulators), counters
    everything = xj.make_optimizer(params, learning_rate=1e-3, freeze=None)
    assert sum(x.nbytes for x in _leaves(everything.init(params))) > 2 * sum(
        p.nbytes for p in _leaves(params)
    )


def test_twenty_steps_move_trainable_and_keep_frozen_bit_identical(classifier):
    model, params = classifier
    labels = xj.freeze_labels(params, "xmod_paper")
    tx = xj.make_optimizer(params, learning_rate=1e-3, clip_norm=1.0)
    step = xj.make_train_step(model, tx, labels)
    before = jax.tree.map(np.asarray, params)
    state = _fresh_state(params, tx)
    losses = []
    for _ in range(20):
        state, metrics = step(state, BATCH)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    for old, new, label in zip(
        _leaves(before), _leaves(state.params), _leaves(labels), strict=True
    ):
        if label == "frozen":
            np.testing.assert_array_equal(old, new)
        else:
            assert not np.array_equal(old, new)


def test_new_language_rows_train_alone(classifier):
    model, params = classifier
    freeze = ("new_language", "de_DE")
    labels = xj.freeze_labels(params, freeze, CONFIG)
    tx = xj.make_optimizer(
        params, learning_rate=1e-2, freeze=freeze, config=CONFIG, weight_decay=0.1
    )
    step = xj.make_train_step(model, tx, labels)
    state = _fresh_state(params, tx)
    batch = {**BATCH, "lang_ids": np.full(8, 1, np.int32)}
    before = jax.tree.map(np.asarray, params)
    for _ in range(5):
        state, _ = step(state, batch)
    axes = xj.params_axes(params, CONFIG)
    is_names = lambda x: isinstance(x, tuple)  # noqa: E731
    after = jax.tree.map(np.asarray, state.params)
    for old, new, names in zip(
        _leaves(before), _leaves(after), jax.tree.leaves(axes, is_leaf=is_names), strict=True
    ):
        if "lang" not in names:
            np.testing.assert_array_equal(old, new)
            continue
        axis = names.index("lang")
        for row in (0, 2):  # en_XX and fr_XX: bit-identical despite weight decay
            np.testing.assert_array_equal(np.take(old, row, axis), np.take(new, row, axis))
        assert not np.array_equal(np.take(old, 1, axis), np.take(new, 1, axis))


def test_weight_decay_skips_biases_and_layer_norm_scales(classifier):
    _, params = classifier
    tx = xj.make_optimizer(params, learning_rate=0.1, freeze=None, weight_decay=0.5)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    flat = jax.tree_util.tree_leaves_with_path(updates)
    for path, update in flat:
        name = path[-1].key
        if name in ("bias", "scale"):
            assert not np.any(update), path
        else:  # decoupled decay: -lr * wd * param
            param = params
            for key in path:
                param = param[key.key]
            np.testing.assert_allclose(update, -0.05 * np.asarray(param), rtol=1e-6, atol=1e-7)


def test_learning_rate_schedules():
    from xmod_jax.train.optim import learning_rate_schedule

    assert learning_rate_schedule(1e-3) == 1e-3
    warm = learning_rate_schedule(1.0, warmup_steps=10, total_steps=110)
    assert float(warm(0)) == 0 and float(warm(10)) == 1.0 and abs(float(warm(60)) - 0.5) < 1e-6
    cosine = learning_rate_schedule(1.0, warmup_steps=0, total_steps=100, schedule="cosine")
    assert abs(float(cosine(50)) - 0.5) < 1e-6 and float(cosine(100)) < 1e-6
    custom = optax.constant_schedule(3.0)
    assert learning_rate_schedule(custom, warmup_steps=5) is custom
    with pytest.raises(ValueError, match="exceed"):
        learning_rate_schedule(1.0, warmup_steps=10, total_steps=5)
    with pytest.raises(ValueError, match="linear' or 'cosine"):
        learning_rate_schedule(1.0, total_steps=5, schedule="step")
    # warmup-stable-decay: the peak held until the last decay_steps, then linear to 0
    wsd = learning_rate_schedule(1.0, warmup_steps=10, total_steps=110, decay_steps=20)
    lrs = [float(wsd(s)) for s in (5, 10, 60, 90, 100, 110)]
    np.testing.assert_allclose(lrs, [0.5, 1.0, 1.0, 1.0, 0.5, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="decay_steps"):
        learning_rate_schedule(1.0, warmup_steps=10, total_steps=110, decay_steps=101)


def test_clipping_ignores_frozen_gradients(classifier):
    _, params = classifier
    labels = xj.freeze_labels(params, "xmod_paper")
    tx = xj.make_optimizer(params, learning_rate=0.1, clip_norm=1e-3, weight_decay=0.0)
    grads = jax.tree.map(
        lambda p, label: jnp.full(p.shape, 1e3 if label == "frozen" else 1e-2, p.dtype),
        params,
        labels,
    )
    trainable_only = jax.tree.map(
        lambda g, label: g if label == "trainable" else jnp.zeros_like(g), grads, labels
    )
    a, _ = tx.update(grads, tx.init(params), params)
    b, _ = tx.update(trainable_only, tx.init(params), params)
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_accumulation_averages_micro_batches(classifier):
    _, params = classifier
    g1 = jax.tree.map(lambda p: jnp.full(p.shape, 0.3, p.dtype), params)
    g2 = jax.tree.map(lambda p: jnp.full(p.shape, -0.1, p.dtype), params)
    accumulated = xj.make_optimizer(params, learning_rate=1e-2, accumulate_steps=2)
    state = accumulated.init(params)
    first, state = accumulated.update(g1, state, params)
    assert not any(np.any(u) for u in _leaves(first))  # nothing applied mid-accumulation
    second, _ = accumulated.update(g2, state, params)
    plain = xj.make_optimizer(params, learning_rate=1e-2)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    expected, _ = plain.update(mean, plain.init(params), params)
    for x, y in zip(_leaves(second), _leaves(expected), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------- train state
def test_partition_and_merge_round_trip(classifier):
    _, params = classifier
    labels = xj.freeze_labels(params, "xmod_paper")
    trainable, frozen = partition(params, labels)
    assert len(_leaves(trainable)) + len(_leaves(frozen)) == len(_leaves(params))
    assert jax.tree.structure(merge(trainable, frozen)) == jax.tree.structure(params)


def test_bfloat16_compute_with_float32_master_weights(classifier):
    _, params = classifier
    model = xj.XmodForSequenceClassification(CONFIG, dtype=jnp.bfloat16)
    labels = xj.freeze_labels(params, "xmod_paper")
    tx = xj.make_optimizer(params, learning_rate=1e-3)
    state = _fresh_state(params, tx)
    state, metrics = xj.make_train_step(model, tx, labels)(state, BATCH)
    assert np.isfinite(float(metrics["loss"]))
    assert {x.dtype for x in _leaves(state.params)} == {jnp.dtype(jnp.float32)}


def test_eval_step_has_dropout_off_and_reports_accuracy(classifier):
    model, params = classifier
    evaluate = xj.make_eval_step(model)
    metrics = evaluate(params, BATCH)
    logits = model.apply({"params": params}, BATCH["input_ids"], lang_ids=0).logits
    predictions = np.argmax(np.asarray(logits), axis=-1)
    np.testing.assert_array_equal(metrics["predictions"], predictions)
    assert float(metrics["accuracy"]) == np.mean(predictions == BATCH["labels"])
    again = evaluate(params, BATCH)
    assert float(again["loss"]) == float(metrics["loss"])


def test_data_order_is_a_pure_function_of_seed_and_step():
    a = [batch_indices(7, step, 10, 3) for step in range(6)]
    b = [batch_indices(7, step, 10, 3) for step in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert len(set(np.concatenate(a[:3]).tolist())) == 9  # an epoch never repeats an example
    assert not np.array_equal(batch_indices(8, 0, 10, 3), a[0])


# ---------------------------------------------------------------------------- checkpoints
def _run(step_fn, state, steps, data, seed=0):
    for _ in range(steps):
        idx = batch_indices(seed, int(state.step), len(data["labels"]), 4)
        state, _ = step_fn(state, {k: v[idx] for k, v in data.items()})
    return state


def test_resume_is_exact(classifier, tmp_path):
    model, params = classifier
    labels = xj.freeze_labels(params, "xmod_paper")
    tx = xj.make_optimizer(params, learning_rate=1e-3, warmup_steps=2, total_steps=20)
    step_fn = xj.make_train_step(model, tx, labels)
    straight = _run(step_fn, _fresh_state(params, tx, seed=5), 6, BATCH)
    half = _run(step_fn, _fresh_state(params, tx, seed=5), 3, BATCH)
    with xj.TrainCheckpoints(tmp_path / "ckpt") as checkpoints:
        checkpoints.save(half, {"accuracy": 0.5})
    like = _fresh_state(params, tx)
    with xj.TrainCheckpoints(tmp_path / "ckpt") as checkpoints:
        restored = checkpoints.restore(like)
    assert int(restored.step) == 3
    resumed = _run(step_fn, restored, 3, BATCH)
    for x, y in zip(_leaves(straight), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_keeps_latest_and_best(classifier, tmp_path):
    model, params = classifier
    tx = xj.make_optimizer(params, learning_rate=1e-3)
    state = _fresh_state(params, tx)
    accuracies = [0.4, 0.9, 0.5, 0.6, 0.3]
    with xj.TrainCheckpoints(tmp_path, keep_last=2, keep_best=1) as checkpoints:
        for accuracy in accuracies:
            state = state.replace(step=state.step + 1)
            checkpoints.save(state, {"accuracy": accuracy})
        with pytest.raises(ValueError, match="accuracy"):
            checkpoints.save(state.replace(step=state.step + 1), {"loss": 1.0})
    with xj.TrainCheckpoints(tmp_path, keep_last=2, keep_best=1) as checkpoints:
        assert checkpoints.all_steps() == [2, 4, 5]
        assert checkpoints.best_step() == 2 and checkpoints.latest_step() == 5
        assert int(checkpoints.restore(state, step=2).step) == 2


KILLED_SAVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import jax, xmod_jax as xj
from orbax.checkpoint._src.path import atomicity
from helpers import TINY, random_params
model = xj.XmodForSequenceClassification(xj.XmodConfig(**TINY))
params = random_params(model)
tx = xj.make_optimizer(params, learning_rate=1e-3)
state = xj.TrainState.create(params, tx)
checkpoints = xj.TrainCheckpoints({directory!r}, async_save=False)
checkpoints.save(state.replace(step=state.step + 1), {{"accuracy": 0.5}})
async def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
    cls.finalize = killed
bad = jax.tree.map(lambda x: x * 0 + 7, state.replace(step=state.step + 2))
checkpoints.save(bad, {{"accuracy": 0.9}})
"""


def test_interrupted_save_never_replaces_the_last_good_checkpoint(tmp_path):
    code = KILLED_SAVE.format(tests=os.path.dirname(__file__), directory=str(tmp_path))
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    params = random_params(xj.XmodForSequenceClassification(xj.XmodConfig(**TINY)))
    like = xj.TrainState.create(params, xj.make_optimizer(params, learning_rate=1e-3))
    with xj.TrainCheckpoints(tmp_path) as checkpoints:
        assert checkpoints.latest_step() == 1
        restored = checkpoints.restore(like)
    assert int(restored.step) == 1
    assert not np.any(np.asarray(_leaves(restored.params)[0]) == 7)
