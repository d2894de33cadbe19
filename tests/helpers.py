"""Everything the tests share: the parity oracle, tiny configs, trained tokenizers (on made-up
words, and on the committed corpus sample), and a compilation counter.

The oracle: tiny random transformers X-MOD models. Every reference number in the tests comes
from transformers' own torch classes built here (or from hand derivation), never from the code
under test. Parameters are perturbed away from transformers' init (LayerNorm weights 1, biases 0,
zero pad rows) so a wrong LayerNorm, bias or pad-row mapping cannot hide.

Parity tests about the math convert the torch state dict in memory (`from_torch`); the loading
and saving tests, and one case per head, take the full `save_pretrained` / `from_pretrained`
folder round trip.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json
import pathlib
import random
import shutil
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm

try:  # the oracle; absent on CI's newest-Python leg, which has no torch build
    import torch
    import transformers
except ImportError:
    torch = transformers = None

import xmod_jax as xj
from xmod_jax.ckpts.loading import align_state_dict
from xmod_jax.ckpts.mapping import hf_to_params
from xmod_jax.ckpts.weights import TensorStore
from xmod_jax.nn.layouts import stack_layers
from xmod_jax.train.mlm_data import read_documents

NO_TORCH = "needs torch and transformers (the parity oracle); not installed here"
needs_torch = pytest.mark.skipif(torch is None, reason=NO_TORCH)


def require_torch() -> None:
    """Skip the calling test (or fixture) where the oracle is not installed."""
    if torch is None:
        pytest.skip(NO_TORCH)


TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    type_vocab_size=2,
    layer_norm_eps=1e-5,
    languages=["en_XX", "de_DE", "fr_XX"],
)
BASE_FLAGS = dict(  # facebook/xmod-base and its 13/30/60/75-language siblings
    pre_norm=False,
    adapter_layer_norm=False,
    adapter_reuse_layer_norm=True,
    ln_before_adapter=True,
    adapter_reduction_factor=2,
)
LARGE_FLAGS = dict(  # facebook/xmod-large-prenorm
    pre_norm=True,
    adapter_layer_norm=True,
    adapter_reuse_layer_norm=False,
    ln_before_adapter=False,
    adapter_reduction_factor=4,
)
FLAG_NAMES = ("pre_norm", "adapter_layer_norm", "adapter_reuse_layer_norm", "ln_before_adapter")
ALL_FLAG_COMBOS = [
    dict(zip(FLAG_NAMES, v, strict=True)) for v in itertools.product((False, True), repeat=4)
]

# A padded batch mixing languages in no particular order (lang ids index TINY["languages"]).
INPUT_IDS = np.array(
    [
        [0, 5, 6, 7, 8, 9, 10, 2],
        [0, 11, 12, 13, 2, 1, 1, 1],
        [0, 14, 2, 1, 1, 1, 1, 1],
        [0, 15, 16, 17, 18, 19, 2, 1],
    ]
)
ATTENTION_MASK = (INPUT_IDS != 1).astype(np.int64)
LANG_IDS = np.array([2, 0, 1, 0])


def hf_config(**overrides) -> transformers.XmodConfig:
    require_torch()
    return transformers.XmodConfig(**{**TINY, **overrides}, attn_implementation="eager")


def hf_model(class_name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A transformers X-MOD class with perturbed random weights, in eval mode."""
    require_torch()
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(hf_config(**overrides)).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def from_torch(reference: torch.nn.Module, **module_fields) -> tuple[xj.XmodModel, dict]:
    """Our module of the same class and its params, converted in memory (nothing written).

    The config is what `save_pretrained` would write to config.json; the state dict takes the
    loader's own path (`align_state_dict`: prefixes, buffers, the tied decoder copy, then
    `hf_to_params`), and every tensor must fit: nothing missing, unexpected or mis-shaped.
    """
    name = type(reference).__name__
    config = xj.XmodConfig.from_dict({**reference.config.to_diff_dict(), "architectures": [name]})
    model = getattr(xj, name)(config, **module_fields)
    unrolled = model.clone(scan_layers=False)  # transformers' layout
    shapes = jax.tree.map(lambda s: tuple(s.shape), unrolled.param_shapes())
    tensors = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    store = TensorStore({k: functools.partial(np.asarray, v) for k, v in tensors.items()})
    state, _ = align_state_dict(store, config, "roberta" in shapes)
    to_device = functools.partial(jnp.asarray, dtype=model.param_dtype)
    result = hf_to_params(state, shapes, xj.logical_axes(unrolled), config.languages, to_device)
    assert not (result.missing or result.mismatched or result.unexpected), result
    params = result.params
    return model, stack_layers(params) if model.scan_layers else params


def random_params(model, seed: int = 0, scale: float = 0.1) -> dict:
    """Params for any of our modules without compiling `init`: N(0, scale) everywhere, plus one
    on LayerNorm scales; enough for round trips and routing checks (not transformers' init)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        value = scale * rng.standard_normal(leaf.shape)
        if path[-1].key == "scale":
            value += 1.0
        return jax.numpy.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, model.param_shapes())


def run_hf(model: torch.nn.Module, **inputs) -> dict:
    """Outputs of a transformers model as numpy arrays (tuples for hidden states/attentions)."""
    require_torch()
    tensors = {k: torch.as_tensor(v) for k, v in inputs.items() if not isinstance(v, bool)}
    flags = {k: v for k, v in inputs.items() if isinstance(v, bool)}
    with torch.no_grad():
        out = model(**tensors, **flags)
    result = {}
    for key, value in out.items():
        if isinstance(value, tuple):
            if value:  # transformers reports cross_attentions=() for encoders
                result[key] = tuple(v.numpy() for v in value)
        elif isinstance(value, torch.Tensor):
            result[key] = value.numpy()
    return result


def max_abs_diff(ours, theirs) -> float:
    """Largest |difference| over matching arrays or tuples of arrays."""
    if isinstance(theirs, tuple):
        assert len(ours) == len(theirs), (len(ours), len(theirs))
        return max(max_abs_diff(a, b) for a, b in zip(ours, theirs, strict=True))
    ours = np.asarray(ours, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.max(np.abs(ours - theirs)))


def assert_outputs_match(ours, theirs: dict, atol: float = 1e-5) -> None:
    """Every field transformers returned equals ours within atol."""
    assert theirs, "reference returned nothing"
    for name, ref in theirs.items():
        if name in ("loss", "past_key_values"):
            continue
        diff = max_abs_diff(getattr(ours, name), ref)
        assert diff <= atol, f"{name}: max abs diff {diff:.3g} > {atol}"


# ------------------------------------------------------------------ tokenizer and pipeline models
WORDS = (
    "the house is green and the capital of France is Paris with 3.14 or 12345 people "
    "Die Straße über dem Fluss ist schön für Mädchen und Jungen "
    "le garçon naïve à l'école élève français où "
    "東京 日本語 北京大学 中文 東京は日本の首都です "
    "مرحبا بالعالم السلام عليكم "
    "Ελληνικά русский язык 😀 🎉 👍🏽 ❤️"
).split()
ALPHABETS = [
    "abcdefghijklmnoprstuvwyz",
    "äöüßéèêàçñ",
    "東京日本語北京大学中文字首都",
    "مرحبالعسن",
    "αβγδεηλ",
    "абвгдежзик",
]


def make_corpus(n_lines: int = 400) -> list[str]:
    """Real words plus pseudo-words in several scripts, enough for a few hundred pieces."""
    rng = random.Random(0)

    def word() -> str:
        if rng.random() < 0.5:
            return rng.choice(WORDS)
        letters = rng.choice(ALPHABETS[:1] * 3 + ALPHABETS)
        return "".join(rng.choices(letters, k=rng.randint(1, 7)))

    return [" ".join(word() for _ in range(rng.randint(3, 14))) for _ in range(n_lines)]


def train_spm_model(
    folder,
    sentences: list[str] | None = None,
    vocab_size: int = 300,
    character_coverage: float = 1.0,
) -> None:
    """A unigram sentencepiece model of `sentences` (default `make_corpus()`, 300 pieces):
    `folder/m.model`, `m.vocab`."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_corpus() if sentences is None else sentences),
        model_prefix=str(folder / "m"),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=character_coverage,
        max_sentence_length=8000,  # bytes: a corpus document of 2,000 CJK characters fits
        num_threads=1,
        minloglevel=2,
    )


def train_tokenizer(folder, sentences: list[str] | None = None, **options) -> xj.XmodTokenizer:
    """An XLM-R style tokenizer trained by `train_spm_model` (by default the 302-id one of
    `make_corpus()`), saved into `folder` and loaded back from it."""
    train_spm_model(folder, sentences, **options)
    tokenizer = xj.XmodTokenizer(model_file=folder / "m.model")
    (folder / "m.model").unlink()
    (folder / "m.vocab").unlink()
    tokenizer.save_pretrained(folder)
    return xj.XmodTokenizer.from_pretrained(folder)


CORPUS_SAMPLE = pathlib.Path(__file__).resolve().parent / "data" / "corpus_sample"
SAMPLE_VOCAB_CHARS = 4_000  # characters per language the sample's tokenizer is trained on


def sample_languages() -> list[str]:
    """The language codes of the corpus sample (corpus/sample.py's record, SAMPLE.json)."""
    record = json.loads((CORPUS_SAMPLE / "SAMPLE.json").read_text(encoding="utf-8"))
    return record["sample"]["languages"]


def corpus_sample_copy(folder: pathlib.Path) -> pathlib.Path:
    """The corpus sample copied to `folder`, with the manifest.json (training characters per
    language) that examples/pretrain.py reads from a built corpus."""
    shutil.copytree(CORPUS_SAMPLE, folder)
    totals = {
        code: {"totals": {"train": {"chars": len((folder / f"{code}.train.txt").read_text()),
                                    "bytes": (folder / f"{code}.train.txt").stat().st_size}}}
        for code in sample_languages()
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps({"languages": totals}))
    return folder


def train_sample_tokenizer(folder) -> xj.XmodTokenizer:
    """A 1502-id tokenizer of real text: 1500 unigram pieces trained on the first
    SAMPLE_VOCAB_CHARS characters of every language's training text in the corpus sample."""
    text = [
        doc
        for code in sample_languages()
        for doc in read_documents(CORPUS_SAMPLE / f"{code}.train.txt", SAMPLE_VOCAB_CHARS)
    ]
    return train_tokenizer(folder, text, vocab_size=1500, character_coverage=0.995)


LANGUAGES = ["en_XX", "de_DE", "fr_XX"]
MAX_POSITIONS = 66  # 64 tokens: pipeline length buckets 16, 32, 64


def tiny_config(vocab_size: int, **overrides) -> xj.XmodConfig:
    """A small config for pipeline and CLI models over a trained tokenizer's vocabulary."""
    return xj.XmodConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        languages=LANGUAGES,
        **overrides,
    )


# ------------------------------------------------------------------------------- compilations
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # one per XLA compilation


@contextlib.contextmanager
def count_compiles() -> Iterator[collections.Counter]:
    """XLA compilations that happen inside the block, counted by the compiled function's name.

    Eager ops compile too (named after their primitive or `jnp` function), so a test counts the
    name of the jitted function it means, or asserts that nothing at all was compiled.
    """
    compiles: collections.Counter = collections.Counter()

    def listener(event: str, duration_secs: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            compiles[kwargs.get("fun_name")] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
