"""What the modules say about themselves, and the facts that have one source each.

Heads describe themselves (architecture name, head parameters, labels, loss); `params_axes` finds
the module from the parameter names; LM heads project the vocabulary at chosen positions only;
runtime options and the default language are resolved in one place; scanned decoders keep their
cache stacked; `generate` validates its arguments once; the tokenizer saves atomically.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest
from helpers import TINY, count_compiles, needs_torch, random_params, train_tokenizer, transformers

import xmod_jax as xj
from xmod_jax import decoding
from xmod_jax.nn import inputs as inputs_module
from xmod_jax.nn.heads import ARCHITECTURES, HEAD_CLASSES, HEAD_PARAMS, class_for
from xmod_jax.nn.options import ROUTINGS, RuntimeOptions

CONFIG = xj.XmodConfig(**TINY)
IDS = np.array([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]])
MASK = (IDS != 1).astype(np.int32)
LANGS = np.array([0, 2])


def is_names(x) -> bool:
    return isinstance(x, tuple)


# ------------------------------------------------------------------------ self-describing heads
@needs_torch
@pytest.mark.parametrize("cls", [xj.XmodModel, *HEAD_CLASSES], ids=lambda c: c.__name__)
def test_each_class_names_its_transformers_class_and_its_head_parameters(cls):
    assert hasattr(transformers, cls.hf_architecture)
    assert ARCHITECTURES[cls.hf_architecture] is cls
    config = dataclasses.replace(CONFIG, is_decoder=True) if cls is xj.XmodForCausalLM else CONFIG
    shapes = cls(config.with_labels(num_labels=2)).param_shapes()
    encoder = {"roberta", "embeddings", "encoder", "pooler"}
    assert set(shapes) - encoder == set(cls.head_params)
    assert set(cls.head_params) <= set(HEAD_PARAMS)


@pytest.mark.parametrize("cls", HEAD_CLASSES, ids=lambda c: c.__name__)
def test_uses_labels_says_whether_num_labels_shapes_the_outputs(cls):
    config = dataclasses.replace(CONFIG, is_decoder=cls is xj.XmodForCausalLM)
    if cls is xj.XmodForQuestionAnswering:
        assert not cls.uses_labels  # always two outputs, start and end
        return
    sizes = {
        n: jax.tree.leaves(cls(config.with_labels(num_labels=n)).param_shapes()) for n in (3, 5)
    }
    changes = [a.shape != b.shape for a, b in zip(sizes[3], sizes[5], strict=True)]
    assert any(changes) == cls.uses_labels


def test_class_for_reads_the_config_architectures():
    assert class_for(("XmodForTokenClassification",)) is xj.XmodForTokenClassification
    assert class_for(("BertModel", "XmodForMaskedLM")) is xj.XmodForMaskedLM
    assert class_for(None) is xj.XmodModel


def test_architectures_are_kept_on_the_config(tmp_path):
    model = xj.XmodForSequenceClassification(CONFIG)
    model.save_pretrained(tmp_path, random_params(model))
    config = xj.XmodConfig.from_pretrained(tmp_path)
    assert config.architectures == ("XmodForSequenceClassification",)
    assert config == CONFIG  # metadata: not part of equality (nor of jit caches)


# ------------------------------------------------------------------------------- params_axes
@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
@pytest.mark.parametrize(
    "cls, fields",
    [
        (xj.XmodModel, {}),
        (xj.XmodModel, {"add_pooling_layer": False}),
        *((cls, {}) for cls in HEAD_CLASSES if cls is not xj.XmodForCausalLM),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_params_axes_recognises_the_module_from_its_parameter_names(cls, fields, scan):
    model = cls(CONFIG.with_labels(num_labels=2), scan_layers=scan, **fields)
    shapes = model.param_shapes()
    expected = xj.logical_axes(model)
    assert xj.params_axes(shapes, CONFIG) == expected
    assert xj.params_axes(shapes, model) == expected


def test_params_axes_refuses_a_tree_that_fits_no_module():
    shapes = xj.XmodForMaskedLM(CONFIG).param_shapes()
    shapes["lm_head"]["extra"] = shapes["lm_head"]["bias"]
    with pytest.raises(ValueError, match="lm_head/extra is not an X-MOD parameter"):
        xj.params_axes(shapes, CONFIG)


# ------------------------------------------------------------------------- logits_positions
@pytest.mark.parametrize("cls", [xj.XmodForMaskedLM, xj.XmodForCausalLM], ids=lambda c: c.__name__)
def test_lm_heads_project_only_the_chosen_positions(cls):
    config = dataclasses.replace(CONFIG, is_decoder=cls is xj.XmodForCausalLM)
    model = cls(config)
    params = random_params(model)
    full = model.apply({"params": params}, IDS, lang_ids=LANGS, attention_mask=MASK).logits
    positions = np.array([[1, 3, 3], [0, 2, 1]])
    part = model.apply(
        {"params": params},
        IDS,
        lang_ids=LANGS,
        attention_mask=MASK,
        logits_positions=positions,
    ).logits
    assert part.shape == (2, 3, config.vocab_size)
    expected = np.take_along_axis(np.asarray(full), positions[..., None], axis=1)
    np.testing.assert_allclose(part, expected, atol=1e-6)


def test_logits_positions_are_checked():
    model = xj.XmodForMaskedLM(CONFIG)
    params = random_params(model)
    call = lambda positions: model.apply(  # noqa: E731
        {"params": params}, IDS, lang_ids=LANGS, logits_positions=positions
    )
    with pytest.raises(ValueError, match=r"logits_positions out of range: found \[5\]"):
        call(np.array([[5], [0]]))
    with pytest.raises(ValueError, match=r"must be \[B=2, K\]"):
        call(np.array([1, 2]))
    jitted = jax.jit(lambda p, pos: model.apply({"params": p}, IDS, LANGS, logits_positions=pos))
    logits = np.asarray(jitted(params, np.array([[1, 7], [-1, 0]])).logits)
    assert np.isnan(logits).any(-1).tolist() == [[False, True], [True, False]]  # never clamped
    encoder = xj.XmodModel(CONFIG)
    with pytest.raises(ValueError, match="LM heads only"):
        encoder.apply(
            {"params": random_params(encoder)}, IDS, lang_ids=LANGS, logits_positions=[[0], [0]]
        )


# ------------------------------------------------------------------- one source for each fact
def test_runtime_options_are_validated_when_the_module_is_built():
    assert ROUTINGS == ("gather", "single", "auto", "ragged")
    with pytest.raises(ValueError, match="routing must be one of"):
        xj.XmodForMaskedLM(CONFIG, routing="per-token")
    with pytest.raises(ValueError, match="remat must be one of"):
        xj.XmodModel(CONFIG, remat="some")
    model = xj.XmodForMaskedLM(CONFIG, attention_impl="explicit", scan_layers=True)
    assert model.options == RuntimeOptions("gather", "explicit", True, "none")


def test_one_default_language_resolver_speaks_for_modules_pipelines_and_cli():
    config = CONFIG  # no default_language
    messages = []
    for how in ("lang_ids=config.lang_ids([...])", "lang= (one code, or one per text)"):
        with pytest.raises(ValueError) as error:
            config.default_lang_id(how=how)
        messages.append(str(error.value))
        assert f"pass {how}; known: en_XX, de_DE, fr_XX" in messages[-1]
    with pytest.raises(ValueError) as error:  # the module's own call
        xj.XmodModel(config).apply({"params": random_params(xj.XmodModel(config))}, IDS)
    assert str(error.value) == messages[0]
    assert config.with_default_language("fr_XX").default_lang_id() == 2


def test_lang_ids_reach_the_device_as_one_int32_array():
    lang_ids = inputs_module.resolve_lang_ids(CONFIG, np.int64(2), batch=3, repeats=2)
    assert isinstance(lang_ids, jax.Array) and lang_ids.dtype == np.int32
    assert lang_ids.tolist() == [2, 2, 2, 2, 2, 2]
    assert inputs_module.resolve_lang_ids(CONFIG, [0, 2], batch=2, repeats=3).tolist() == [
        0, 0, 0, 2, 2, 2,
    ]  # fmt: skip


# --------------------------------------------------------------------------- decoding paths
def _decoder(scan: bool):
    config = dataclasses.replace(CONFIG, is_decoder=True)
    model = xj.XmodForCausalLM(config)
    params = random_params(model)
    if scan:
        return model.clone(scan_layers=True), xj.stack_layers(params)
    return model, params


def test_scanned_decoders_keep_the_cache_stacked_between_calls():
    model, params = _decoder(scan=True)
    plain, plain_params = _decoder(scan=False)

    @jax.jit
    def step(p, ids, cache):
        return model.apply({"params": p}, ids, lang_ids=LANGS, past_key_values=cache)

    cache = xj.init_cache(model.config, 2, 8, scan_layers=True)
    assert cache.is_stacked and cache.layers.key.shape == (2, 2, 4, 8, 8)  # [layers, B, N, S, H]
    reference = plain.apply(
        {"params": plain_params},
        IDS[:, :3],
        lang_ids=LANGS,
        past_key_values=xj.init_cache(model.config, 2, 8),
    )
    with count_compiles() as compiles:
        out = step(params, IDS[:, :3], cache)
        for t in range(3, 5):
            out = step(params, IDS[:, t : t + 1], out.past_key_values)
    assert out.past_key_values.is_stacked
    assert jax.tree.structure(out.past_key_values) == jax.tree.structure(cache)
    assert compiles["jit(step)"] == 2  # the prompt's shape and the one-token shape
    first = step(params, IDS[:, :3], cache).logits
    np.testing.assert_allclose(first, reference.logits, atol=1e-5)


def test_generate_validates_on_the_host_once(monkeypatch):
    model, params = _decoder(scan=False)
    calls = {"generate": 0, "module": 0}
    original = inputs_module.prepare_inputs

    def counting(where):
        def prepare(*args, **kwargs):
            calls[where] += 1
            return original(*args, **kwargs)

        return prepare

    monkeypatch.setattr(decoding, "prepare_inputs", counting("generate"))
    monkeypatch.setattr("xmod_jax.nn.module.prepare_inputs", counting("module"))
    tokens = xj.generate(model, params, IDS[:, :3], LANGS, max_new_tokens=4)
    assert tokens.shape == (2, 7)
    assert calls == {"generate": 1, "module": 0}  # the jitted loop calls `forward` directly


# ------------------------------------------------------------------------------- text, atomic
def test_tokenizer_save_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    (tmp_path / "spm").mkdir()
    tokenizer = train_tokenizer(tmp_path / "spm")
    folder = tmp_path / "saved"
    tokenizer.save_pretrained(folder)
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    tokenizer.model_max_length = 17  # what the next save would write differs

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("xmod_jax.atomic.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        tokenizer.save_pretrained(folder)
    after = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    assert after == before  # the previous files, whole, and no temporary left behind
