"""Threads sharing one model get the answers of sequential calls, bit for bit: one jitted forward
function, the pipelines and `from_pretrained`, each called from several threads at once.

The threaded calls run first, so they also race on the first compilation (or the first load);
the sequential calls after them are the reference. Models are tiny, and the threads few.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
import pytest
from helpers import ATTENTION_MASK, INPUT_IDS, LANG_IDS, random_params, tiny_config

import xmod_jax as xj
from xmod_jax import pipelines as pl
from xmod_jax.ckpts.folders import hf_to_flax

THREADS = 4
TEXTS = [
    ["the house is <mask>", "Paris is the <mask> of <mask>"],
    ["Die Straße über dem <mask> ist schön"],
    ["le garçon <mask> à l'école", "東京は日本の<mask>です", "<mask>"],
    ["the house is <mask>", "Paris is the <mask> of <mask>"],  # the first again: same inputs
]
LANGS = ["en_XX", "de_DE", ["fr_XX", "en_XX", "de_DE"], "en_XX"]


def in_threads(call: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """`[call(0), ..., call(n - 1)]`, each in its own thread, all released at once."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return [f.result() for f in [pool.submit(run, i) for i in range(n)]]


def assert_bitwise_equal(ours: Any, reference: Any) -> None:
    """Equal pytrees (lists, tuples, dicts, named tuples) whose arrays match bit for bit."""
    ours_leaves, ours_tree = jax.tree.flatten(ours)
    ref_leaves, ref_tree = jax.tree.flatten(reference)
    assert ours_tree == ref_tree
    for a, b in zip(ours_leaves, ref_leaves, strict=True):
        if isinstance(b, (np.ndarray, jax.Array)):
            a, b = np.asarray(a), np.asarray(b)
            assert (a.dtype, a.shape) == (b.dtype, b.shape)
            assert a.tobytes() == b.tobytes(), f"max abs diff {np.max(np.abs(a - b))}"
        else:
            assert a == b


def _model(tokenizer, initializer_range: float) -> tuple[xj.XmodForMaskedLM, dict]:
    """A masked LM whose config no other test uses, so its first pipeline call compiles."""
    model = xj.XmodForMaskedLM(
        tiny_config(tokenizer.vocab_size, initializer_range=initializer_range)
    )
    return model, random_params(model, seed=3, scale=0.5)


# ---------------------------------------------------------------------------------- forward
def test_one_jitted_forward_from_threads(tokenizer):
    model, params = _model(tokenizer, 0.0201)
    inputs = [  # thread i: the batch with its languages rotated by i; threads 0 and 3 the same
        (INPUT_IDS, np.roll(LANG_IDS, i % 3), ATTENTION_MASK) for i in range(THREADS)
    ]

    @jax.jit
    def forward(params, input_ids, lang_ids, attention_mask):
        out = model.apply(
            {"params": params}, input_ids, lang_ids=lang_ids, attention_mask=attention_mask
        )
        return out.logits  # [B, T, V]

    threaded = in_threads(lambda i: [forward(params, *inputs[i]) for _ in range(3)])
    sequential = [forward(params, *x) for x in inputs]
    for runs, reference in zip(threaded, sequential, strict=True):
        for logits in runs:
            assert_bitwise_equal(logits, reference)
    assert_bitwise_equal(threaded[3], threaded[0])
    assert not np.array_equal(sequential[0], sequential[1])  # the languages do matter


# -------------------------------------------------------------------------------- pipelines
def test_pipelines_from_threads(tokenizer):
    """fill_mask in half of the threads, embed in the other half, on one model at once."""
    model, params = _model(tokenizer, 0.0202)

    def call(i: int, task: int) -> Any:
        texts = [t.replace("<mask>", "x") for t in TEXTS[i]] if task else TEXTS[i]
        if task:
            return pl.embed(model, params, tokenizer, texts, LANGS[i], normalize=True)
        return pl.fill_mask(model, params, tokenizer, texts, LANGS[i], top_k=3, batch_size=2)

    threaded = in_threads(lambda j: call(j // 2, j % 2), 2 * THREADS)
    sequential = [call(j // 2, j % 2) for j in range(2 * THREADS)]
    assert_bitwise_equal(threaded, sequential)
    assert_bitwise_equal(threaded[6:], threaded[:2])  # the same texts give the same answers


# -------------------------------------------------------------------------------- loading
@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer):
    """(transformers folder with tokenizer, orbax folder) of one masked LM."""
    hf = tmp_path_factory.mktemp("hf")
    tokenizer.save_pretrained(hf)
    model, params = _model(tokenizer, 0.0203)
    model.save_pretrained(hf, params)
    orbax = tmp_path_factory.mktemp("parent") / "orbax"
    hf_to_flax(str(hf), str(orbax), progress=False)
    return hf, orbax


@pytest.mark.parametrize("kind", ["safetensors", "orbax"])
def test_from_pretrained_from_threads(folders, kind):
    folder = folders[0] if kind == "safetensors" else folders[1]

    def load(_: int) -> tuple[xj.XmodForMaskedLM, dict]:
        return xj.XmodForMaskedLM.from_pretrained(folder, progress=False)

    threaded = in_threads(load)
    model, reference = load(0)
    for other, params in threaded:
        assert other == model
        assert_bitwise_equal(params, reference)


def test_tokenizer_from_threads(folders):
    texts: Sequence[str] = [t for batch in TEXTS for t in batch]

    def encode(_: int) -> list[np.ndarray]:
        tokenizer = xj.XmodTokenizer.from_pretrained(folders[0])
        return [tokenizer(texts).input_ids for _ in range(3)]

    threaded = in_threads(encode)
    reference = encode(0)
    for ids in threaded:
        assert_bitwise_equal(ids, reference)
