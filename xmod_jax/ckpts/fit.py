"""Whether stored arrays fit a `config.json`, and which config field explains each size.

A config that does not describe its arrays (an edited `languages`, another model's file) must
end in an error naming the leaf or key, the config field behind the size and both sizes, never
in numpy's IndexError or a silently truncated model. Sizes come from logical axis names
(`xmod_jax.nn.axes`): `lang` is `languages`, `vocab` is `vocab_size`, and so on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from xmod_jax.ckpts.mapping import Path, dtype_class, get_leaf, iter_leaves
from xmod_jax.config import XmodConfig
from xmod_jax.nn.layers import AXIS_NAMES, LANG_AXIS
from xmod_jax.nn.layouts import LAYER

# The config fields that may set an axis of each logical name, most likely first; a field's
# size is `_size(config, field)`. `mlp` is the FFN width, or the hidden size in heads and pooler.
AXIS_FIELDS: dict[str, tuple[str, ...]] = {
    "vocab": ("vocab_size",),
    "embed": ("hidden_size",),
    "heads": ("num_attention_heads",),
    "kv": ("head_dim",),
    "mlp": ("intermediate_size", "hidden_size"),
    "adapter": ("adapter_size",),
    LANG_AXIS: ("languages",),
    "layers": ("num_hidden_layers",),
    "labels": ("num_labels",),
}
assert set(AXIS_FIELDS) == set(AXIS_NAMES), "every logical axis name needs its config fields"
# Axes named None: the rows of these tables, by the module holding them.
TABLE_FIELDS = {
    "position_embeddings": "max_position_embeddings",
    "token_type_embeddings": "type_vocab_size",
}
# Derived sizes, reported as the fields a user edits.
DERIVED = {
    "head_dim": ("hidden_size", "num_attention_heads"),
    "adapter_size": ("hidden_size", "adapter_reduction_factor"),
}
HF_LAYER = re.compile(r"\.layer\.(\d+)\.")
HF_ADAPTER = re.compile(r"\.adapter_modules\.([^.]+)\.")
MAX_LISTED = 12


def _size(config: XmodConfig, field: str) -> int:
    return len(config.languages) if field == "languages" else getattr(config, field)


def describe(config: XmodConfig, field: str) -> list[str]:
    """`field` as config.json text: ["vocab_size=99"], ["languages=[en_XX, de_DE] (2)"]."""
    if field in DERIVED:
        return [item for f in DERIVED[field] for item in describe(config, f)]
    if field == "languages":
        return [f"languages=[{', '.join(config.languages)}] ({len(config.languages)})"]
    return [f"{field}={getattr(config, field)}"]


def axis_field(config: XmodConfig, path: Path, name: str | None, size: int) -> str | None:
    """The config field that sets an axis named `name` of leaf `path` to `size`; None when no
    field does (fixed sizes such as the two outputs of a QA head)."""
    if name is None:
        table = TABLE_FIELDS.get(path[-2]) if len(path) > 1 else None
        candidates = () if table is None else (table,)
    else:
        candidates = AXIS_FIELDS[name]
    return next((f for f in candidates if _size(config, f) == size), None)


def _fields_text(config: XmodConfig, fields: Sequence[str | None]) -> str:
    described = [item for f in dict.fromkeys(fields) if f for item in describe(config, f)]
    return ", ".join(dict.fromkeys(described))


def hf_shape_hint(
    config: XmodConfig,
    path: Path,
    names: Sequence[str | None],
    leaf_shape: Sequence[int],
    expected: Sequence[int],
    found: Sequence[int],
) -> str:
    """The suffix `(config.json: vocab_size=99)` for a transformers tensor of leaf `path` whose
    shape `found` differs from `expected` (the shape for a leaf of `leaf_shape`); "" if unknown."""
    axes = [i for i, name in enumerate(names) if name != LANG_AXIS]
    if path[-1] == "kernel":  # transformers [out, in]: the trailing leaf axes make `out`
        split, out = len(axes), 1
        while split > 0 and out < expected[0]:
            split -= 1
            out *= leaf_shape[axes[split]]
        groups = [axes[split:], axes[:split]]
    elif path[-1] == "bias":
        groups = [axes]
    else:
        groups = [[i] for i in axes]
    if len(expected) != len(found) or len(groups) != len(expected):
        differing = range(len(groups))
    else:
        differing = [d for d in range(len(groups)) if expected[d] != found[d]]
    fields = [
        axis_field(config, path, names[i], leaf_shape[i]) for d in differing for i in groups[d]
    ]
    text = _fields_text(config, fields)
    return f" (config.json: {text})" if text else ""  # appended to the listed line


def count_hints(config: XmodConfig, layers: set[int], languages: set[str] | None) -> list[str]:
    """Lines naming `num_hidden_layers` / `languages` when the stored layer indices or adapter
    languages (None: not known) differ from config.json's."""
    hints = []
    if layers != set(range(config.num_hidden_layers)):
        held = f"layers {sorted(layers)}" if layers else "no layers"
        hints.append(
            f"config.json has num_hidden_layers={config.num_hidden_layers}, the file holds {held}"
        )
    if languages is not None and languages != set(config.languages):
        listed = describe(config, "languages")[0]
        extra, absent = (
            sorted(languages - set(config.languages)),
            sorted(set(config.languages) - languages),
        )
        hints.append(
            f"config.json has {listed}; the file has adapters of {sorted(languages)}"
            + (f" (not listed: {extra})" if extra else "")
            + (f" (none for: {absent})" if absent else "")
        )
    return hints


def state_hints(config: XmodConfig, keys: Iterable[str]) -> list[str]:
    """`count_hints` for the keys of a transformers state dict."""
    keys = list(keys)
    layers = {int(m.group(1)) for k in keys if (m := HF_LAYER.search(k))}
    languages = {m.group(1) for k in keys if (m := HF_ADAPTER.search(k))}
    return count_hints(config, layers, languages)


def list_lines(lines: list[str]) -> str:
    """Indented lines, the first `MAX_LISTED` of them."""
    shown = lines[:MAX_LISTED]
    more = len(lines) - len(shown)
    return "\n".join(f"  {line}" for line in shown) + (f"\n  ... and {more} more" if more else "")


def mistyped_line(name: str, found: Any, want_class: str) -> str:
    """`name: int64 data where a floating weight belongs`, for a stored array of another
    `dtype_class` than its leaf."""
    return f"{name}: {np.dtype(found)} data where a {want_class} weight belongs"


def _leaf(path: Path) -> str:
    return "/".join(path)


def params_fit_problems(
    config: XmodConfig, stored: Mapping[str, Any], want: Mapping[str, Any], axes: Mapping[str, Any]
) -> list[str]:
    """Every way the `stored` params tree differs from `want` (a `jax.ShapeDtypeStruct` tree of
    what `config` implies, with logical `axes`): absent or extra leaves, each differing axis with
    its config field and both sizes, and dtypes of another class. Empty when they fit."""
    have = dict(iter_leaves(stored))
    need = dict(iter_leaves(want))
    layers = {int(m.group(1)) for p in have for part in p if (m := LAYER.match(part))}
    problems = count_hints(config, layers, None)
    problems += [
        f"{_leaf(p)} {list(np.shape(x))}: in the params, not implied by config.json"
        for p, x in have.items()
        if p not in need
    ]
    problems += [
        f"{_leaf(p)} {list(s.shape)}: implied by config.json, absent from the params"
        for p, s in need.items()
        if p not in have
    ]
    for path, spec in need.items():
        if path not in have:
            continue
        found, expected = tuple(np.shape(have[path])), tuple(spec.shape)
        names = get_leaf(axes, path)
        if len(found) != len(expected):
            problems.append(
                f"{_leaf(path)}: shape {list(found)} in the params, {list(expected)} from "
                "config.json"
            )
            continue
        for axis, (got, size) in enumerate(zip(found, expected, strict=True)):
            if got != size:
                field = axis_field(config, path, names[axis], size)
                source = _fields_text(config, [field]) if field else "a size no field sets"
                problems.append(
                    f"{_leaf(path)}: axis {axis} ({names[axis]}) holds {got} in the params, "
                    f"config.json implies {size} ({source})"
                )
        stored_class, want_class = dtype_class(have[path].dtype), dtype_class(spec.dtype)
        if stored_class != want_class:
            line = mistyped_line(_leaf(path), have[path].dtype, want_class)
            problems.append(f"{line} (a corrupt or wrong file)")
    return problems
