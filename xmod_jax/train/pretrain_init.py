"""How a pre-training run starts: the architecture and the attention init.

pretraining_config         the bundled model's architecture (pre-LN, no dropout) at any size
with_local_attention_init  sinusoidal positions and query/key kernels aimed at the
                           neighbouring tokens: a fresh model leaves the unigram plateau in
                           ~300 steps instead of sitting on it
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xmod_jax.config import XmodConfig


def pretraining_config(
    vocab_size: int,
    languages: Sequence[str],
    *,
    hidden_size: int,
    num_hidden_layers: int,
    seq_len: int,
    num_attention_heads: int | None = None,
    intermediate_size: int | None = None,
) -> XmodConfig:
    """The pre-trained architecture: pre-LN, adapters with xmod-base's bottleneck factor 2, no
    dropout (each token is seen about once), positions for rows of `seq_len` tokens. Heads
    default to hidden_size // 64 and the feed-forward width to 4 * hidden_size; the default
    language is en_XX where present, else the first."""
    return XmodConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads or hidden_size // 64,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=seq_len + 2,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pre_norm=True,
        languages=list(languages),
        default_language="en_XX" if "en_XX" in languages else languages[0],
    )


def with_local_attention_init(
    params: Any,
    pad_token_id: int,
    position_scale: float = 0.1,
    sharpness: float = 1.0,
    offsets: tuple[int, ...] = (-1, 1, -2, 2),
) -> Any:
    """Params whose attention starts local: sinusoidal positions, and in every layer head h
    attends to the position `offsets[h % len(offsets)]` away (-1: the previous token).

    Why: with transformers' init (std 0.02 everywhere) attention starts uniform, so a masked
    token receives 1/S of its neighbours' signal, the query/key kernels get almost no gradient,
    and a fresh MLM sits on the unigram plateau: here a 24-language model at hidden 256 stayed
    there for 1,500 steps, and a 2-layer model trained on rows whose every token is doubled (the
    answer always one position away) for 1,000 steps, in transformers' torch as in ours.

    How: the position table (rows after `pad_token_id`; the rows up to it are never used by
    tokens) holds the Transformer's sinusoids times `position_scale` (5x the word embeddings'
    init std: positions dominate the normalised input at first, so each head's aim is sharp
    and not drowned by word-word similarity). The normalised input of every layer then carries
    (sin w i, cos w i) for each frequency w. Head h's query kernel reads
    head_dim / 2 of those pairs, and its key kernel the same pairs turned by w * offset, so
    that q_i . k_j = sharpness * sum_w cos(w (i + offset - j)): largest at j = i + offset. All
    other kernels keep their init, and training reshapes every head freely.
    """
    body = "roberta" if "roberta" in params else next(iter(params))
    embeddings = params[body]["embeddings"]
    table = embeddings["position_embeddings"]["embedding"]
    rows, width = table.shape
    first = pad_token_id + 1
    waves = sinusoids(rows - first, width) * position_scale
    table = table.at[first:].set(jnp.asarray(waves, table.dtype))
    embeddings = {**embeddings, "position_embeddings": {"embedding": table}}

    def aim(tree: Any) -> Any:
        if not isinstance(tree, dict):
            return tree
        tree = {k: aim(v) for k, v in tree.items()}
        if "query" in tree and "key" in tree:
            query, key = _offset_kernels(tree["query"]["kernel"], offsets, sharpness)
            tree = {**tree, "query": {**tree["query"], "kernel": query},
                    "key": {**tree["key"], "kernel": key}}  # fmt: skip
        return tree

    return aim({**params, body: {**params[body], "embeddings": embeddings}})


def _offset_kernels(
    kernel: jax.Array, offsets: tuple[int, ...], sharpness: float
) -> tuple[jax.Array, jax.Array]:
    """Query and key kernels [..., E, heads, D] (a leading layers axis when scanned) whose head h
    matches position i with i + offsets[h]: each head reads D / 2 sinusoid frequencies (the
    highest first), the key side turned by w * offset."""
    *lead, embed, heads, dim = kernel.shape
    half = embed // 2
    freqs = 1.0 / np.power(10000.0, 2 * np.arange(half) / embed)
    query = np.zeros((embed, heads, dim), np.float32)
    key = np.zeros((embed, heads, dim), np.float32)
    gain = np.sqrt(sharpness * np.sqrt(dim))  # cancels the 1/sqrt(D) of the attention scores
    for h in range(heads):
        offset = offsets[h % len(offsets)]
        for j in range(min(dim // 2, half)):  # frequency j: the highest separate neighbours best
            sin_col, cos_col = j, half + j
            turn = -freqs[j] * offset  # the key at position p + offset meets the query at p
            # q_p = (sin w p, cos w p), k_p = (sin w (p - offset), cos w (p - offset))
            query[sin_col, h, 2 * j] = gain
            query[cos_col, h, 2 * j + 1] = gain
            key[sin_col, h, 2 * j] = gain * np.cos(turn)
            key[cos_col, h, 2 * j] = gain * np.sin(turn)
            key[cos_col, h, 2 * j + 1] = gain * np.cos(turn)
            key[sin_col, h, 2 * j + 1] = -gain * np.sin(turn)
    shape = (*lead, embed, heads, dim)
    return (
        jnp.broadcast_to(jnp.asarray(query, kernel.dtype), shape),
        jnp.broadcast_to(jnp.asarray(key, kernel.dtype), shape),
    )


def sinusoids(length: int, width: int) -> np.ndarray:
    """float32 [length, width]: the Transformer's position signals, sines in the first half of
    the columns and cosines in the second (wavelengths 2pi .. 10000 * 2pi)."""
    angles = np.arange(length)[:, None] / np.power(10000.0, 2 * np.arange(width // 2) / width)
    out = np.zeros((length, width), np.float32)
    out[:, : width // 2] = np.sin(angles)
    out[:, width // 2 : 2 * (width // 2)] = np.cos(angles)
    return out
