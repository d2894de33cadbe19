"""transformers state dict <-> Flax params, on numpy arrays (torch is never imported).

The whole mapping is three things:
  1. a rename table: Flax module paths equal transformers' module names except `layer_3` ->
     `layer.3` and the leaf names below;
  2. leaf rules: Linear `weight [out, in]` <-> `kernel [in..., out...]` (transpose, then reshape
     to the kernel's axes, e.g. query `[D, N, H]`); LayerNorm `weight` <-> `scale`; Embedding
     `weight` <-> `embedding`; biases reshaped (`[N*H]` <-> `[N, H]`);
  3. adapter stacking: leaves with a `lang` logical axis gather one transformers tensor per language
     (`...adapter_modules.<code>.dense1.weight`) along that axis, in `config.languages` order.
Every transformers key is consumed at most once and every leaf filled exactly once; what is left
over is reported, so the loader can decide what is an error. So is a tensor of another dtype class
than its leaf (`dtype_class`: integer data under a float weight's name is a corrupt or wrong file,
where float32 / bfloat16 / float16 are only widths).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from xmod_jax.nn.layers import LANG_AXIS
from xmod_jax.nn.layouts import LAYER

Path = tuple[str, ...]
AxisNames = tuple[str | None, ...]

RENAMES: tuple[tuple[str, str], ...] = ((LAYER.pattern, r"layer.\1"),)
LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
ADAPTER_MODULE = "adapter_modules"


@dataclasses.dataclass
class ConversionResult:
    """Filled leaves plus everything that did not fit: keys, (key, expected, found) shapes and
    (key, expected dtype class, found dtype)."""

    params: dict[str, Any]
    missing: dict[Path, list[str]]  # leaf path -> transformers keys not found
    mismatched: dict[Path, list[tuple[str, tuple[int, ...], tuple[int, ...]]]]
    unexpected: list[str]
    mistyped: dict[Path, list[tuple[str, str, np.dtype]]] = dataclasses.field(default_factory=dict)


def dtype_class(dtype: Any) -> str:
    """The class of a dtype: bool, integer, floating (ml_dtypes' too) or complex."""
    dtype = np.dtype(dtype)
    kinds = {"b": "bool", "i": "integer", "u": "integer", "f": "floating", "c": "complex"}
    if dtype.kind in kinds:
        return kinds[dtype.kind]
    for info, name in ((ml_dtypes.finfo, "floating"), (ml_dtypes.iinfo, "integer")):
        try:  # ml_dtypes' types (bfloat16, float8_*, int4) have numpy kind "V"
            info(dtype)
            return name
        except ValueError:
            pass
    return dtype.kind


def iter_leaves(tree: Mapping[str, Any], prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """(path, leaf) pairs of a nested dict, in sorted key order."""
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, Mapping):
            yield from iter_leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def set_leaf(tree: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def get_leaf(tree: Mapping[str, Any], path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def module_name(path: Path) -> str:
    """Flax module path (without the leaf) -> transformers module name."""
    parts = []
    for part in path[:-1]:
        for pattern, replacement in RENAMES:
            part = re.sub(pattern, replacement, part)
        parts.append(part)
    return ".".join(parts)


def hf_keys(path: Path, names: AxisNames, languages: Sequence[str]) -> list[str]:
    """transformers key(s) of one leaf: one per language for a language-stacked leaf."""
    leaf = LEAF_NAMES[path[-1]]
    module = module_name(path)
    if LANG_AXIS not in names:
        return [f"{module}.{leaf}"]
    head, sep, tail = module.partition(ADAPTER_MODULE)
    assert sep, f"language-stacked leaf outside {ADAPTER_MODULE}: {path}"
    return [f"{head}{ADAPTER_MODULE}.{code}{tail}.{leaf}" for code in languages]


def _out_size(path: Path, shapes: Mapping[str, Any], names: AxisNames) -> int:
    """Output features of a kernel: the size of its sibling bias (language axis removed)."""
    bias = tuple(get_leaf(shapes, (*path[:-1], "bias")))
    if LANG_AXIS in names:
        bias = bias[1:]
    return math.prod(bias)


def hf_shape(path: Path, shape: Sequence[int], names: AxisNames, shapes: Mapping) -> tuple:
    """Shape of one transformers tensor for a leaf of `shape` (one language's slice if stacked)."""
    shape = tuple(shape)
    if LANG_AXIS in names:
        shape = shape[: names.index(LANG_AXIS)] + shape[names.index(LANG_AXIS) + 1 :]
    if path[-1] == "kernel":
        out = _out_size(path, shapes, names)
        return (out, math.prod(shape) // out)
    if path[-1] == "bias":
        return (math.prod(shape),)
    return shape


def _from_hf(path: Path, tensor: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    if path[-1] == "kernel":
        tensor = tensor.T
    return tensor.reshape(shape)


def _to_hf(path: Path, leaf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if path[-1] == "kernel":
        return np.ascontiguousarray(leaf.reshape(shape[::-1]).T)
    return np.ascontiguousarray(leaf.reshape(shape))


def hf_to_params(
    state: Mapping[str, np.ndarray],
    shapes: Mapping[str, Any],
    axes: Mapping[str, Any],
    languages: Sequence[str],
    finalize: Callable[[np.ndarray], Any] = lambda leaf: leaf,
    dtypes: Mapping[str, Any] | None = None,
) -> ConversionResult:
    """Fill every leaf of `shapes` (a tree of shape tuples) from a transformers state dict.

    Tensors are looked up one leaf at a time and each finished leaf goes through `finalize`
    (e.g. a copy to the device), so a lazily read `state` is never held in memory whole. With
    `dtypes` (a tree of the leaves' dtypes), a tensor of another `dtype_class` is not converted
    but reported in `mistyped`.
    """
    consumed: set[str] = set()
    params: dict[str, Any] = {}
    missing: dict[Path, list[str]] = {}
    mismatched: dict[Path, list] = {}
    mistyped: dict[Path, list] = {}
    for path, shape in iter_leaves(shapes):
        names = get_leaf(axes, path)
        keys = hf_keys(path, names, languages)
        consumed.update(keys)
        absent = [k for k in keys if k not in state]
        if absent:
            missing[path] = absent
            continue
        expected = hf_shape(path, shape, names, shapes)
        tensors = [state[k] for k in keys]
        if dtypes is not None:
            want = dtype_class(get_leaf(dtypes, path))
            typed = [(k, want, t.dtype) for k, t in zip(keys, tensors, strict=True)]
            typed = [entry for entry in typed if dtype_class(entry[2]) != want]
            if typed:
                mistyped[path] = typed
                continue
        wrong = [(k, expected, t.shape) for k, t in zip(keys, tensors, strict=True)]
        wrong = [(k, want, tuple(got)) for k, want, got in wrong if tuple(got) != want]
        if wrong:
            mismatched[path] = wrong
            continue
        if LANG_AXIS in names:
            axis = names.index(LANG_AXIS)
            sliced = tuple(shape[:axis]) + tuple(shape[axis + 1 :])
            leaf = np.stack([_from_hf(path, t, sliced) for t in tensors], axis=axis)
        else:
            leaf = _from_hf(path, tensors[0], shape)
        del tensors
        set_leaf(params, path, finalize(leaf))
    unexpected = sorted(set(state) - consumed)
    return ConversionResult(params, missing, mismatched, unexpected, mistyped)


def hf_tensor_specs(
    params: Mapping[str, Any], axes: Mapping[str, Any], languages: Sequence[str]
) -> list[tuple[str, np.dtype, tuple[int, ...], Callable[[], np.ndarray]]]:
    """(key, dtype, shape, producer) of every transformers tensor; producers build C-contiguous
    numpy arrays on demand, so a writer can stream them one at a time."""
    shapes: dict[str, Any] = {}
    for path, leaf in iter_leaves(params):
        set_leaf(shapes, path, tuple(np.shape(leaf)))
    specs = []
    for path, leaf in iter_leaves(params):
        names = get_leaf(axes, path)
        expected = hf_shape(path, np.shape(leaf), names, shapes)
        keys = hf_keys(path, names, languages)
        dtype = np.dtype(leaf.dtype)
        axis = names.index(LANG_AXIS) if LANG_AXIS in names else None
        for index, key in enumerate(keys):
            produce = functools.partial(_hf_tensor, path, leaf, axis, index, expected)
            specs.append((key, dtype, expected, produce))
    return specs


def _hf_tensor(path: Path, leaf: Any, axis: int | None, index: int, shape: tuple) -> np.ndarray:
    leaf = np.asarray(leaf)
    if axis is not None:
        leaf = np.take(leaf, index, axis=axis)
    return _to_hf(path, leaf, shape)


def params_to_hf(
    params: Mapping[str, Any], axes: Mapping[str, Any], languages: Sequence[str]
) -> dict[str, np.ndarray]:
    """Flax params (any array type) -> transformers state dict of C-contiguous numpy arrays."""
    return {key: produce() for key, _, _, produce in hf_tensor_specs(params, axes, languages)}
