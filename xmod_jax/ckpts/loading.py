"""`from_pretrained` / `save_pretrained`: transformers folders <-> (module, params).

Policy on top of `mapping.py`, following transformers: encoder weights load with or without the
`roberta.` prefix; tensors of another head and legacy buffers are dropped, and missing head or
pooler weights are initialised (each reported in one log line); a head tensor of the right name
but wrong shape raises unless `ignore_mismatched_sizes=True`. Anything else that is missing,
unexpected or mis-shaped raises one error listing every offending key.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from xmod_jax.atomic import readable_folder, updated_folder
from xmod_jax.ckpts.fit import (
    hf_shape_hint,
    list_lines,
    mistyped_line,
    params_fit_problems,
    state_hints,
)
from xmod_jax.ckpts.mapping import (
    Path,
    get_leaf,
    hf_shape,
    hf_tensor_specs,
    hf_to_params,
    iter_leaves,
    set_leaf,
)
from xmod_jax.ckpts.orbax_params import ORBAX_PARAMS, is_orbax_folder, load_orbax_params
from xmod_jax.ckpts.weights import (
    TensorStore,
    read_state_dict,
    write_safetensors,
)
from xmod_jax.config import CONFIG_NAME, XmodConfig
from xmod_jax.errors import CheckpointError
from xmod_jax.hub import (
    SAFE_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TORCH_INDEX_NAME,
    TORCH_WEIGHTS_NAME,
    has_weight_files,
    resolve_folder,
)
from xmod_jax.nn.axes import logical_axes
from xmod_jax.nn.heads import ARCHITECTURES, HEAD_PARAMS, class_for
from xmod_jax.nn.layouts import stack_layers, unstack_layers
from xmod_jax.nn.module import Params, XmodPreTrainedModule, _unboxed_init

logger = logging.getLogger("xmod_jax")

ENCODER_PREFIX = "roberta."
ENCODER_MODULES = ("embeddings.", "encoder.", "pooler.")
HEAD_PREFIXES = tuple(f"{name}." for name in HEAD_PARAMS)
LEGACY_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# What `save_pretrained` replaces: the config and the weights of every layout (a stale file of
# another layout would describe another model than the new config.json). Everything else stays.
MODEL_FILES = (
    CONFIG_NAME,
    SAFE_WEIGHTS_NAME,
    SAFE_INDEX_NAME,
    "model-*-of-*.safetensors",
    TORCH_WEIGHTS_NAME,
    TORCH_INDEX_NAME,
    "pytorch_model-*-of-*.bin",
    ORBAX_PARAMS,
)


def is_head_key(key: str) -> bool:
    """Tensors a model may lack or drop: task heads and the pooler."""
    return key.startswith(HEAD_PREFIXES) or key.removeprefix(ENCODER_PREFIX).startswith("pooler.")


def _is_head_path(path: Path) -> bool:
    return path[0] in HEAD_PARAMS or "pooler" in path


def align_state_dict(
    state: TensorStore, config: XmodConfig, has_encoder_prefix: bool
) -> tuple[TensorStore, list[str]]:
    """Normalise key prefixes, drop buffers and the tied decoder copy -> (state, dropped keys).

    Only names change here; no tensor is read.
    """
    names: dict[str, str] = {}  # new name -> name in the file
    dropped: list[str] = []
    for key in state:
        bare = key.removeprefix(ENCODER_PREFIX)
        if bare.endswith(LEGACY_BUFFERS):
            dropped.append(key)
            continue
        if bare.startswith(ENCODER_MODULES):
            names[ENCODER_PREFIX + bare if has_encoder_prefix else bare] = key
        else:
            names[key] = key
    if config.tie_word_embeddings:
        names.pop("lm_head.decoder.weight", None)  # the tied copy of the word table
        decoder_bias = names.pop("lm_head.decoder.bias", None)  # tied to lm_head.bias
        if decoder_bias is not None:
            names.setdefault("lm_head.bias", decoder_bias)
    return state.renamed(names), dropped


def _format_shapes(entries: list[tuple[str, tuple, tuple]], hints: dict[str, str]) -> str:
    return "\n".join(
        f"  {key}: expected {list(exp)}, found {list(got)}{hints.get(key, '')}"
        for key, exp, got in entries
    )


def load_pretrained(
    cls: type[XmodPreTrainedModule],
    path: str | os.PathLike,
    *,
    dtype: Any,
    param_dtype: Any,
    num_labels: int | None,
    id2label: Any,
    default_language: str | None,
    ignore_mismatched_sizes: bool,
    seed: int,
    progress: bool,
    module_fields: dict[str, Any],
) -> tuple[XmodPreTrainedModule, Params]:
    """See `XmodPreTrainedModule.from_pretrained`."""
    folder = resolve_folder(readable_folder(path))  # a save killed mid-swap
    config = stored_config = XmodConfig.from_pretrained(folder)  # what describes the files
    changed = {k: v for k, v in cls.config_defaults.items() if getattr(config, k) != v}
    if changed:
        logger.info("%s: %s sets %s", folder, cls.__name__, changed)
        config = dataclasses.replace(config, **changed)
    if num_labels is not None or id2label is not None:
        config = config.with_labels(num_labels=num_labels, id2label=id2label)
    if default_language is not None:
        config = config.with_default_language(default_language)
    model = cls(config, dtype=dtype, param_dtype=param_dtype, **module_fields)
    unrolled = model.clone(scan_layers=False)  # checkpoints hold the unrolled layout
    to_device = functools.partial(jnp.asarray, dtype=param_dtype)
    if has_weight_files(folder) or not is_orbax_folder(folder):
        state = read_state_dict(folder)
        params = None
    else:
        saved = unstack_layers(load_orbax_params(folder))
        want = unrolled.param_shapes()
        if _same_shapes(saved, want):  # our own layout needs no conversion
            problems = params_fit_problems(stored_config, saved, want, logical_axes(unrolled))
            if problems:  # shapes fit, so only dtype classes can differ
                raise CheckpointError(f"{folder}: corrupt orbax params:\n{list_lines(problems)}")
            params = jax.tree.map(to_device, saved)
        else:
            state, params = orbax_as_hf_state(folder, stored_config, saved), None
    if params is None:
        params = params_from_state(
            unrolled, folder, state, ignore_mismatched_sizes, seed, to_device, progress
        )
    return model, stack_layers(params) if model.scan_layers else params


def _same_shapes(tree: Params, shapes: Params) -> bool:
    have = {p: tuple(np.shape(x)) for p, x in iter_leaves(tree)}
    return have == {p: tuple(s.shape) for p, s in iter_leaves(shapes)}


def orbax_as_hf_state(folder: str, config: XmodConfig, saved: Params) -> TensorStore:
    """Params saved for another head, renamed to transformers keys so the usual policy applies.

    `config` is the folder's config.json as written, which must describe `saved` exactly (the
    converter writes both): anything else is refused naming the leaf, field and sizes.
    """
    if not any(name in ARCHITECTURES for name in config.architectures or ()):
        raise CheckpointError(
            f"{folder}: the orbax params do not fit and config.json names no X-MOD architecture "
            "to convert them from"
        )
    source = class_for(config.architectures)(config)
    problems = params_fit_problems(config, saved, source.param_shapes(), logical_axes(source))
    if problems:
        raise CheckpointError(
            f"{folder}: config.json ({source.hf_architecture}) does not describe the orbax "
            f"params:\n{list_lines(problems)}"
        )
    specs = hf_tensor_specs(saved, logical_axes(source), config.languages)
    return TensorStore({key: produce for key, _, _, produce in specs})


def params_from_state(
    model: XmodPreTrainedModule,
    folder: str,
    state: TensorStore,
    ignore_mismatched_sizes: bool,
    seed: int,
    to_device: Any,
    progress: bool,
) -> Params:
    """Convert a transformers-named state into `model`'s params under the loading policy."""
    config, name = model.config, type(model).__name__
    specs = model.param_shapes()
    shapes = jax.tree.map(lambda s: tuple(s.shape), specs)
    axes = logical_axes(model)
    state, dropped = align_state_dict(state, config, "roberta" in shapes)
    with tqdm(
        total=len(list(iter_leaves(shapes))),
        desc=f"loading {name}",
        unit="tensor",
        disable=not progress,
    ) as bar:

        def finalize(leaf: np.ndarray) -> jax.Array:
            bar.update(1)
            return to_device(leaf)

        dtypes = jax.tree.map(lambda s: s.dtype, specs)
        result = hf_to_params(state, shapes, axes, config.languages, finalize, dtypes)

    errors = []
    if result.mistyped:
        listed_types = "\n".join(
            f"  {mistyped_line(key, found, want)}"
            for entries in result.mistyped.values()
            for key, want, found in entries
        )
        errors.append(f"tensors of another dtype class (a corrupt or wrong file):\n{listed_types}")
    bad_missing = {p: keys for p, keys in result.missing.items() if not _is_head_path(p)}
    if bad_missing:
        listed = "\n".join(
            f"  {k}: expected {list(hf_shape(p, shapes_of(shapes, p), get_leaf(axes, p), shapes))}"
            for p, keys in bad_missing.items()
            for k in keys
        )
        errors.append(f"missing tensors:\n{listed}")
    bad_unexpected = [k for k in result.unexpected if not is_head_key(k)]
    if bad_unexpected:
        errors.append("unexpected tensors:\n" + "\n".join(f"  {k}" for k in bad_unexpected))
    head_mismatch = {p: w for p, w in result.mismatched.items() if _is_head_path(p)}
    bad_mismatch = [
        w
        for p, ws in result.mismatched.items()
        for w in ws
        if p not in head_mismatch or not ignore_mismatched_sizes
    ]
    if bad_mismatch:
        hint = " (head tensors: pass ignore_mismatched_sizes=True to re-initialise them)"
        hint = hint if any(p in head_mismatch for p in result.mismatched) else ""
        hints = {
            key: hf_shape_hint(config, p, get_leaf(axes, p), shapes_of(shapes, p), exp, got)
            for p, ws in result.mismatched.items()
            for key, exp, got in ws
        }
        listed = _format_shapes(bad_mismatch, hints)
        errors.append(f"tensors with the wrong shape{hint}:\n{listed}")
    errors += state_hints(config, state) if errors else []
    if errors:
        raise CheckpointError(
            f"{folder}: checkpoint does not fit {name} with this config.json:\n" + "\n".join(errors)
        )

    dropped += [k for k in result.unexpected if is_head_key(k)]
    if dropped:
        logger.info("%s: ignored tensors not used by %s: %s", folder, name, dropped)
    to_init = sorted(set(result.missing) | set(head_mismatch))
    params = result.params
    if to_init:
        logger.warning(
            "%s: newly initialised (seed %d) weights of %s, train them before use: %s",
            folder,
            seed,
            name,
            [".".join(p) for p in to_init],
        )
        for p, value in init_leaves(model, seed, to_init).items():
            set_leaf(params, p, to_device(value))
    return params


def shapes_of(shapes: Params, path: Path) -> tuple[int, ...]:
    return tuple(get_leaf(shapes, path))


def init_leaves(model: XmodPreTrainedModule, seed: int, paths: list[Path]) -> dict[Path, Any]:
    """Random init of only the given leaves (XLA drops the unused part of `init`)."""

    def pick(rng: jax.Array) -> dict[str, Any]:
        params = _unboxed_init(model)(rng)
        return {".".join(p): get_leaf(params, p) for p in paths}

    picked = jax.jit(pick)(jax.random.key(seed))
    return {p: picked[".".join(p)] for p in paths}


def check_params(model: XmodPreTrainedModule, params: Params) -> None:
    """Raise listing every leaf whose presence or shape differs from what `model` expects."""
    want = {p: tuple(s.shape) for p, s in iter_leaves(model.param_shapes())}
    have = {p: tuple(np.shape(x)) for p, x in iter_leaves(params)}
    problems = [f"  missing {'/'.join(p)} {list(s)}" for p, s in want.items() if p not in have]
    problems += [f"  unexpected {'/'.join(p)}" for p in have if p not in want]
    problems += [
        f"  {'/'.join(p)}: expected {list(s)}, found {list(have[p])}"
        for p, s in want.items()
        if p in have and have[p] != s
    ]
    if problems:
        raise ValueError(f"params do not fit {type(model).__name__}:\n" + "\n".join(problems))


def save_pretrained(
    model: XmodPreTrainedModule, params: Params, folder: str | os.PathLike, progress: bool = False
) -> None:
    """See `XmodPreTrainedModule.save_pretrained`. The whole folder changes at once: the new
    files are written into a temporary sibling, the folder's other files (tokenizer, model card,
    the user's own) are linked in beside them, and the result is swapped in for `folder`
    (`atomic.updated_folder`). A crash at any instant leaves the complete old folder or the
    complete new one. `MODEL_FILES` (config and weights of every layout) are replaced."""
    if model.scan_layers:  # transformers files hold the unrolled layout
        model, params = model.clone(scan_layers=False), unstack_layers(params)
    check_params(model, params)  # before anything is written
    with updated_folder(folder, replaces=MODEL_FILES) as tmp:
        write_pretrained(model, params, tmp, progress)


def write_pretrained(
    model: XmodPreTrainedModule, params: Params, folder: str, progress: bool = False
) -> None:
    """Write `model.safetensors` and `config.json` of unrolled, checked params into a new folder
    that the caller swaps into place; tensors are converted and written one at a time."""
    specs = hf_tensor_specs(params, logical_axes(model), model.config.languages)
    write_safetensors(os.path.join(folder, SAFE_WEIGHTS_NAME), specs, progress=progress)
    model.config.save_pretrained(folder, architectures=[model.hf_architecture])
