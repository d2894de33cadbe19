"""`XmodConfig`: transformers' X-MOD configuration as a frozen, hashable dataclass.

Field names and defaults mirror `transformers.XmodConfig` (5.23) so `config.json` files map one to
one. Values arrive as transformers writes them (lists, dicts with int or str keys) and are stored as
tuples, which keeps the config hashable: Flax modules hold it as a field and `jax.jit` may treat the
module as static. Keys that only describe where a file came from are accepted and dropped; a value
that would change the math in a way this package does not implement raises, naming the key.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from xmod_jax.activations import ACTIVATIONS
from xmod_jax.atomic import atomic_write_bytes, readable_folder
from xmod_jax.errors import CheckpointError
from xmod_jax.hub import BUNDLED_MODEL, bundled_folder

CONFIG_NAME = "config.json"
MODEL_TYPE = "xmod"
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

# Keys transformers writes or accepts that do not change the forward math. They are accepted and
# dropped: file metadata, output switches that are call arguments here, then the generation
# defaults that configs of transformers 4.x carry.
_IGNORED_KEYS = frozenset(
    """
    _name_or_path name_or_path _commit_hash transformers_version dtype
    torch_dtype use_bfloat16 return_dict output_hidden_states output_attentions torchscript
    chunk_size_feed_forward gradient_checkpointing _attn_implementation
    _attn_implementation_internal attn_implementation _attn_implementation_autoset
    _experts_implementation_internal experts_implementation tf_legacy_loss finetuning_task
    tokenizer_class prefix task_specific_params sep_token_id decoder_start_token_id
    tie_encoder_decoder output_past auto_map custom_pipelines
    max_length min_length do_sample early_stopping num_beams num_beam_groups diversity_penalty
    temperature top_k top_p typical_p repetition_penalty length_penalty no_repeat_ngram_size
    encoder_no_repeat_ngram_size bad_words_ids num_return_sequences output_scores
    return_dict_in_generate forced_bos_token_id forced_eos_token_id remove_invalid_values
    exponential_decay_length_penalty suppress_tokens begin_suppress_tokens epsilon_cutoff
    eta_cutoff encoder_repetition_penalty
    """.split()
)

_BOOL_FIELDS = (
    "use_cache",
    "pre_norm",
    "adapter_layer_norm",
    "adapter_reuse_layer_norm",
    "ln_before_adapter",
    "is_decoder",
    "add_cross_attention",
    "tie_word_embeddings",
)
_FLOAT_FIELDS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "initializer_range",
    "layer_norm_eps",
)

# Keys that do change the math: accepted only with the value this package implements.
_REQUIRED_VALUES: dict[str, tuple[Any, ...]] = {
    "position_embedding_type": ("absolute",),
    "is_encoder_decoder": (False,),
    "pruned_heads": ({},),
    "cross_attention_hidden_size": (None,),
    "embedding_size": (),  # checked against hidden_size below
}


@dataclasses.dataclass(frozen=True, init=False)
class XmodConfig:
    """X-MOD hyper-parameters under transformers' names; see the module docstring.

    Build it like transformers' class: `XmodConfig(hidden_size=768, languages=["en_XX", ...])`.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 1
    bos_token_id: int | None = 0
    eos_token_id: int | tuple[int, ...] | None = 2
    use_cache: bool = True
    classifier_dropout: float | None = None
    pre_norm: bool = False
    adapter_reduction_factor: int = 2
    adapter_layer_norm: bool = False
    adapter_reuse_layer_norm: bool = True
    ln_before_adapter: bool = True
    languages: tuple[str, ...] = ("en_XX",)
    default_language: str | None = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
    # Fine-tuning fields transformers inherits from PreTrainedConfig.
    num_labels: int = 2
    id2label: tuple[str, ...] = ("LABEL_0", "LABEL_1")
    label2id: tuple[tuple[str, int], ...] = (("LABEL_0", 0), ("LABEL_1", 1))
    problem_type: str | None = None
    # The transformers classes the checkpoint was saved from (`XmodForMaskedLM`, ...): metadata
    # that never changes the math, so it takes no part in equality and hashing.
    architectures: tuple[str, ...] | None = dataclasses.field(default=None, compare=False)

    def __init__(self, **kwargs: Any) -> None:
        fields = {f.name: f.default for f in dataclasses.fields(self)}
        model_type = kwargs.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"model_type {model_type!r} is not an X-MOD config ({MODEL_TYPE!r})")
        _check_math_keys(kwargs)
        unknown = sorted(set(kwargs) - set(fields) - _IGNORED_KEYS - set(_REQUIRED_VALUES))
        if unknown:
            raise ValueError(
                f"unsupported X-MOD config keys {unknown}: xmod_jax does not know how they change "
                "the model; remove them if they are harmless metadata"
            )
        values = {name: kwargs.get(name, default) for name, default in fields.items()}
        values.update(_normalise_labels(kwargs))
        values["languages"] = _as_str_tuple(values["languages"], "languages")
        if values["architectures"] is not None:
            values["architectures"] = _as_str_tuple(values["architectures"], "architectures")
        if isinstance(values["eos_token_id"], list | tuple):
            values["eos_token_id"] = tuple(int(i) for i in values["eos_token_id"])
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._validate()

    # ----------------------------------------------------------------------------- derived sizes
    @property
    def head_dim(self) -> int:
        """Size H of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def adapter_size(self) -> int:
        """Bottleneck R of the language adapters (transformers floors the division)."""
        return self.hidden_size // self.adapter_reduction_factor

    @property
    def num_languages(self) -> int:
        return len(self.languages)

    @property
    def max_sequence_length(self) -> int:
        """Longest sequence whose RoBERTa positions (pad_token_id + 1, ...) fit the table."""
        return self.max_position_embeddings - self.pad_token_id - 1

    # ------------------------------------------------------------------------------- languages
    def lang_ids(self, codes: str | Iterable[str]) -> np.ndarray:
        """Language codes -> int32 lang ids: a str gives shape [], a sequence of n codes [n]."""
        if isinstance(codes, str):
            return np.asarray(self._lang_index(codes), np.int32)
        return np.asarray([self._lang_index(c) for c in codes], np.int32).reshape(-1)

    def default_lang_id(self, how: str = "lang_ids=config.lang_ids([...])") -> int:
        """The lang id of `default_language`, used wherever no language is given.

        When it is unset, raises one ValueError saying to pass `how` instead (the argument or
        option of the caller: `lang_ids=`, `lang=`, `--lang CODE`) or to set a default.
        """
        if self.default_language is None:
            raise ValueError(
                "no language given and config.default_language is unset "
                f"(config.with_default_language(code) sets it): pass {how}; "
                f"known: {', '.join(self.languages)}"
            )
        return self.languages.index(self.default_language)

    def with_default_language(self, code: str | None) -> XmodConfig:
        """Copy with `default_language` set (pure counterpart of `set_default_language`)."""
        if code is not None:
            self._lang_index(code)
        return dataclasses.replace(self, default_language=code)

    def with_labels(self, num_labels: int | None = None, id2label: Any = None) -> XmodConfig:
        """Copy with new task labels (`LABEL_i` names when only `num_labels` is given)."""
        labels = _normalise_labels({"num_labels": num_labels, "id2label": id2label})
        return dataclasses.replace(self, **labels)

    def _lang_index(self, code: str) -> int:
        try:
            return self.languages.index(code)
        except ValueError:
            raise ValueError(
                f"unknown language {code!r}; known: {', '.join(self.languages)}"
            ) from None

    # -------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """transformers-style dict: lists instead of tuples, string keys in `id2label`."""
        out: dict[str, Any] = {"model_type": MODEL_TYPE}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "id2label":
                value = {str(i): label for i, label in enumerate(value)}
            elif f.name == "label2id":
                value = dict(value)
            elif f.name == "num_labels":
                continue  # transformers derives it from id2label
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def _repr_html_(self) -> str:
        """A table for notebooks: the languages and derived sizes first, then every field."""
        rows = [
            ("languages", f"{self.num_languages}: {', '.join(self.languages)}"),
            ("head_dim, adapter_size", f"{self.head_dim}, {self.adapter_size}"),
        ]
        rows += [
            (f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "languages"  # shown above
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
            f"<td style='text-align:left'>{html.escape(str(value))}</td></tr>"
            for name, value in rows
        )
        return f"<table><caption>XmodConfig</caption>{body}</table>"

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> XmodConfig:
        """Build from a transformers dict; overriding `num_labels` or `id2label` replaces the
        stored labels (as transformers does when a new head is put on a checkpoint)."""
        data = dict(data)
        if overrides.get("num_labels") is not None or overrides.get("id2label") is not None:
            for key in ("num_labels", "id2label", "label2id"):
                data.pop(key, None)
        return cls(**{**data, **overrides})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **overrides: Any) -> XmodConfig:
        """Read `folder/config.json` (transformers layout); keyword overrides win. `folder` may
        also be the bundled model's name, `xmod_jax.BUNDLED_MODEL`."""
        if os.fspath(folder) == BUNDLED_MODEL:
            folder = bundled_folder()
        folder = readable_folder(folder)  # a save killed mid-swap leaves the previous folder aside
        path = os.path.join(folder, CONFIG_NAME)
        if not os.path.isfile(path):
            raise CheckpointError(f"no {CONFIG_NAME} in {os.fspath(folder)!r}")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: not a readable JSON config ({e})") from e
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
        if data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise CheckpointError(
                f"{path}: model_type {data.get('model_type')!r} is not an X-MOD checkpoint "
                f"(expected {MODEL_TYPE!r})"
            )
        try:
            return cls.from_dict(data, **overrides)
        except (TypeError, ValueError) as e:  # a field of the wrong type or value
            raise CheckpointError(f"{path}: {e}") from e

    def save_pretrained(
        self, folder: str | os.PathLike, architectures: Sequence[str] | None = None
    ) -> None:
        """Write `folder/config.json` that transformers reads back (atomic rename).

        `architectures` (the saving model's class names) replaces the config's own.
        """
        data = self.to_dict()
        if architectures:
            data["architectures"] = list(architectures)
        os.makedirs(folder, exist_ok=True)
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(os.path.join(os.fspath(folder), CONFIG_NAME), text.encode())

    # ----------------------------------------------------------------------------- validation
    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{name} must be a positive int, got {value!r}",
            )
        # A string such as "false" would read as true: flags and rates must have their type.
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            need(isinstance(value, bool), f"{name} must be true or false, got {value!r}")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            optional = value is None and name == "classifier_dropout"
            number = isinstance(value, int | float) and not isinstance(value, bool)
            need(optional or number, f"{name} must be a number, got {value!r}")
        need(
            self.hidden_size % self.num_attention_heads == 0,
            f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
            f"({self.num_attention_heads})",
        )
        need(
            isinstance(self.adapter_reduction_factor, int)
            and 1 <= self.adapter_reduction_factor
            and self.adapter_size >= 1,
            f"adapter_reduction_factor must be an int in [1, hidden_size], "
            f"got {self.adapter_reduction_factor!r}",
        )
        need(
            isinstance(self.hidden_act, str) and self.hidden_act in ACTIVATIONS,
            f"hidden_act {self.hidden_act!r} is not supported; supported: {sorted(ACTIVATIONS)}",
        )
        need(
            isinstance(self.pad_token_id, int) and 0 <= self.pad_token_id < self.vocab_size,
            f"pad_token_id must be an int in [0, vocab_size), got {self.pad_token_id!r}: "
            "X-MOD position ids are counted from it",
        )
        need(
            self.max_sequence_length >= 1,
            f"max_position_embeddings ({self.max_position_embeddings}) leaves no positions after "
            f"pad_token_id ({self.pad_token_id})",
        )
        need(len(self.languages) >= 1, "languages must name at least one language")
        need(
            len(set(self.languages)) == len(self.languages),
            f"languages contain duplicates: {list(self.languages)}",
        )
        if self.default_language is not None:
            self._lang_index(self.default_language)
        need(
            not self.add_cross_attention or self.is_decoder,
            "add_cross_attention=True requires is_decoder=True (as in transformers)",
        )
        need(
            self.problem_type is None or self.problem_type in PROBLEM_TYPES,
            f"problem_type must be one of {PROBLEM_TYPES} or None, got {self.problem_type!r}",
        )
        need(
            not (self.problem_type == "single_label_classification" and self.num_labels == 1),
            'problem_type="single_label_classification" requires num_labels > 1',
        )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            need(value is None or 0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value!r}")
        eos = self.eos_token_id if isinstance(self.eos_token_id, tuple) else (self.eos_token_id,)
        for name, ids, kinds in (
            ("bos_token_id", (self.bos_token_id,), "an int"),
            ("eos_token_id", eos, "an int or a list of ints"),
        ):
            need(
                all(i is None or isinstance(i, int) and not isinstance(i, bool) for i in ids),
                f"{name} must be {kinds} or None, got {getattr(self, name)!r}",
            )
        for f in dataclasses.fields(self):  # modules hold the config: jit hashes it
            try:
                hash(getattr(self, f.name))
            except TypeError:
                need(False, f"{f.name} has an unsupported value {getattr(self, f.name)!r}")


def _check_math_keys(kwargs: dict[str, Any]) -> None:
    for key, allowed in _REQUIRED_VALUES.items():
        if key not in kwargs:
            continue
        value = kwargs[key]
        if key == "embedding_size":
            ok = value is None or value == kwargs.get("hidden_size", 768)
        else:
            ok = value in allowed or (value is None and key == "pruned_heads")
        if not ok:
            raise ValueError(
                f"config key {key}={value!r} is not supported by xmod_jax (it changes the model); "
                f"supported: {list(allowed) or 'embedding_size == hidden_size'}"
            )


def _as_str_tuple(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not all(isinstance(v, str) for v in items):
        raise ValueError(f"{name} must be a list of strings, got {list(items)!r}")
    return items


def _normalise_labels(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`num_labels` / `id2label` / `label2id` as transformers accepts them -> consistent tuples."""
    num_labels = kwargs.get("num_labels")
    id2label = kwargs.get("id2label")
    label2id = kwargs.get("label2id")
    if id2label is None:
        n = 2 if num_labels is None else int(num_labels)
        if n < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels!r}")
        labels = tuple(f"LABEL_{i}" for i in range(n))
    else:
        if isinstance(id2label, Mapping):
            try:
                by_id = {int(k): str(v) for k, v in id2label.items()}
            except (TypeError, ValueError):
                raise ValueError(f"id2label keys must be ints, got {list(id2label)}") from None
            if sorted(by_id) != list(range(len(by_id))):
                raise ValueError(f"id2label ids must be 0..n-1, got {sorted(by_id)}")
            labels = tuple(by_id[i] for i in range(len(by_id)))
        else:
            labels = _as_str_tuple(id2label, "id2label")
        if num_labels is not None and int(num_labels) != len(labels):
            raise ValueError(f"num_labels={num_labels} disagrees with id2label of {len(labels)}")
        if not labels:
            raise ValueError("id2label must name at least one label")
    if label2id is None:
        pairs = tuple((label, i) for i, label in enumerate(labels))
    elif isinstance(label2id, Mapping):
        pairs = tuple(sorted(((str(k), int(v)) for k, v in label2id.items()), key=lambda p: p[1]))
    else:
        pairs = tuple((str(k), int(v)) for k, v in label2id)
    if sorted(i for _, i in pairs) != list(range(len(labels))):
        raise ValueError(
            f"label2id {dict(pairs)} does not map onto the {len(labels)} label ids of id2label"
        )
    return {"num_labels": len(labels), "id2label": labels, "label2id": pairs}
