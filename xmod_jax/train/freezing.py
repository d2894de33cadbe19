"""Which parameters train: label trees for `optax.multi_transform`, plus row masks.

A rule list is an ordered sequence of `(regex, label)` pairs matched (`re.search`) against each
leaf's path, e.g. `roberta/encoder/layer_3/output/adapter_modules/dense1/kernel`; the first match
wins and every leaf must match one rule. Labels are `"trainable"` or `"frozen"`.

Presets:
- `"xmod_paper"`: what transformers' `freeze_embeddings_and_language_adapters` freezes (and
  fairseq's `sentence_prediction_adapters` task): every embedding table and the embedding
  LayerNorm, every language adapter and every adapter LayerNorm. The tied LM decoder *is* the
  word table, so it stays frozen too, while `lm_head` dense / layer_norm / bias train. Works on
  bare `XmodModel` params as well as on every head's.
- `"adapters_only"`: only the language adapters train (language adaptation).
- `("new_language", code)`: only that language's rows of the adapters train (needs `config`);
  the other rows of those stacked `[L, ...]` leaves are frozen by a row mask.
- `None`: nothing frozen (pre-training).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from xmod_jax.config import XmodConfig
from xmod_jax.nn.axes import params_axes
from xmod_jax.nn.layers import LANG_AXIS

TRAINABLE, FROZEN = "trainable", "frozen"
Rules = Sequence[tuple[str, str]]
ADAPTERS = r"(^|/)adapter_modules/"

PRESETS: dict[str, Rules] = {
    "xmod_paper": (
        (r"(^|/)embeddings/", FROZEN),
        (ADAPTERS, FROZEN),
        (r"(^|/)adapter_layer_norm/", FROZEN),
        (r".*", TRAINABLE),
    ),
    "adapters_only": ((ADAPTERS, TRAINABLE), (r".*", FROZEN)),
    "new_language": ((ADAPTERS, TRAINABLE), (r".*", FROZEN)),
}
EVERYTHING: Rules = ((r".*", TRAINABLE),)  # `None` in place of a preset: nothing frozen


def _path(path: Any) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _rules(preset: str | tuple[str, str] | Rules | None) -> Rules:
    if preset is None:
        return EVERYTHING
    if isinstance(preset, str):
        if preset not in PRESETS or preset == "new_language":
            raise ValueError(
                f"unknown freezing preset {preset!r}; known: 'xmod_paper', 'adapters_only', "
                "('new_language', code), or a list of (regex, label) rules"
            )
        return PRESETS[preset]
    if isinstance(preset, tuple) and len(preset) == 2 and preset[0] == "new_language":
        return PRESETS["new_language"]
    rules = list(preset)
    bad = [r for r in rules if len(r) != 2 or r[1] not in (TRAINABLE, FROZEN)]
    if bad:
        raise ValueError(f"rules must be (regex, 'trainable' | 'frozen') pairs, got {bad}")
    return rules


def freeze_labels(
    params: Any,
    rules_or_preset: str | tuple[str, str] | Rules | None,
    config: XmodConfig | None = None,
) -> Any:
    """A tree like `params` whose leaves are "trainable" or "frozen" (see the module docstring);
    `None` marks every leaf trainable.

    Raises naming every leaf no rule matches. `config` is needed for ("new_language", code).
    """
    rules = [(re.compile(pattern), label) for pattern, label in _rules(rules_or_preset)]
    if _new_language(rules_or_preset) is not None:
        _language_row(rules_or_preset, config)  # validate the code early
    unmatched: list[str] = []

    def label(path: Any, leaf: Any) -> str:
        name = _path(path)
        for pattern, value in rules:
            if pattern.search(name):
                return value
        unmatched.append(name)
        return FROZEN

    labels = jax.tree_util.tree_map_with_path(label, params)
    if unmatched:
        raise ValueError(f"no freezing rule matches these parameters: {unmatched}")
    return labels


def row_masks(
    params: Any, rules_or_preset: str | tuple[str, str] | Rules, config: XmodConfig | None
) -> Any | None:
    """For ("new_language", code): float masks broadcastable to each adapter leaf, 1 on that
    language's row (found through the logical `lang` axis) and 0 elsewhere; None for other
    leaves. None for every other preset (no row-level freezing)."""
    if _new_language(rules_or_preset) is None:
        return None
    row = _language_row(rules_or_preset, config)
    axes = params_axes(params, config)

    def mask(leaf: Any, names: tuple[str | None, ...]) -> jax.Array | None:
        if LANG_AXIS not in names:
            return None
        axis = names.index(LANG_AXIS)
        shape = [1] * len(names)
        shape[axis] = leaf.shape[axis]
        return (jnp.arange(leaf.shape[axis]) == row).astype(leaf.dtype).reshape(shape)

    return jax.tree.map(mask, params, axes, is_leaf=lambda x: isinstance(x, tuple))


def _new_language(preset: Any) -> str | None:
    if isinstance(preset, tuple) and len(preset) == 2 and preset[0] == "new_language":
        return preset[1]
    return None


def _language_row(preset: tuple[str, str], config: XmodConfig | None) -> int:
    if config is None:
        raise ValueError("('new_language', code) needs config= to find the language's row")
    return int(config.lang_ids(preset[1]))
