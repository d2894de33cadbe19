"""Host-side data for X-MOD pre-training: one language per row, many languages per batch.

  pack_rows               documents of one language -> fixed-length rows [N, S]
  language_probabilities  p_l ∝ n_l^alpha (XLM-R's exponential smoothing; alpha 0.3)
  MixedLanguageBatches    batch(step) -> {input_ids, attention_mask, lang_ids}: every row draws
                          its language from p, then that language's next row
  tokenize_documents      a corpus split file (one document per line) -> token id arrays
  corpus_rows             a corpus folder's split, every language tokenized and packed

Packing follows RoBERTa's "full sentences": a language's documents are concatenated in their
order, each closed by `</s>`, and the stream is cut into rows that each start with `<s>`; only a
language's last row is padded. A row never holds two languages, because rows are packed per
language. Batches are a pure function of (seed, step), so a resumed run sees the very batches
it would have seen; numpy only, no jax.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


def pack_rows(
    documents: Iterable[Sequence[int]], seq_len: int, *, bos_id: int, eos_id: int, pad_id: int
) -> np.ndarray:
    """Token id rows int32 [N, seq_len]: `<s>` then the next seq_len - 1 tokens of the stream
    `doc1 </s> doc2 </s> ...`; the last row is padded with `pad_id`."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    pieces = [
        np.append(np.asarray(doc, np.int32), np.int32(eos_id)) for doc in documents if len(doc)
    ]
    if not pieces:
        raise ValueError("no non-empty documents to pack")
    stream = np.concatenate(pieces)
    width = seq_len - 1
    n_rows = -(-len(stream) // width)
    body = np.full(n_rows * width, pad_id, np.int32)
    body[: len(stream)] = stream
    rows = np.empty((n_rows, seq_len), np.int32)
    rows[:, 0] = bos_id
    rows[:, 1:] = body.reshape(n_rows, width)
    return rows


def padding_fraction(rows: np.ndarray, pad_id: int) -> float:
    """Share of `pad_id` tokens among all positions."""
    return float(np.mean(rows == pad_id))


def language_probabilities(sizes: Sequence[float], alpha: float = 0.3) -> np.ndarray:
    """p_l = n_l^alpha / sum_k n_k^alpha, float64 [L]. alpha 1: proportional to size; 0: uniform."""
    sizes = np.asarray(sizes, np.float64)
    if sizes.ndim != 1 or len(sizes) == 0 or np.any(sizes <= 0):
        raise ValueError(f"sizes must be a non-empty list of positive numbers, got {sizes}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    weights = sizes**alpha
    return weights / weights.sum()


class MixedLanguageBatches:
    """Mixed-language batches of packed rows.

    rows: one int [N_l, S] array per language (same S); lang_ids: each language's adapter index
    in the model's config. Every row of a batch draws its language from `probabilities` (default
    `language_probabilities(N_l, alpha)`), then takes that language's next row; each language's
    rows are visited in a fresh random order every epoch. `batch(step)` depends only on
    (seed, step).
    """

    def __init__(
        self,
        rows: Sequence[np.ndarray],
        lang_ids: Sequence[int],
        batch_size: int,
        *,
        pad_id: int,
        alpha: float = 0.3,
        probabilities: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        if len(rows) != len(lang_ids) or not rows:
            raise ValueError(f"{len(rows)} row arrays for {len(lang_ids)} lang_ids")
        if len({r.shape[1] for r in rows}) != 1:
            raise ValueError(f"rows differ in length: {sorted({r.shape[1] for r in rows})}")
        if any(len(r) == 0 for r in rows):
            raise ValueError("a language has no rows")
        self.rows = list(rows)
        self.lang_ids = np.asarray(lang_ids, np.int32)
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.seed = seed
        sizes = [len(r) for r in rows]
        p = language_probabilities(sizes, alpha) if probabilities is None else probabilities
        self.probabilities = np.asarray(p, np.float64)
        if self.probabilities.shape != (len(rows),) or not np.isclose(self.probabilities.sum(), 1):
            raise ValueError(f"probabilities must be {len(rows)} numbers summing to 1")
        self._visits = [np.zeros(len(rows), np.int64)]  # visits before step s, s = 0, 1, ...
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    @property
    def seq_len(self) -> int:
        return self.rows[0].shape[1]

    def languages(self, step: int) -> np.ndarray:
        """Index (into `rows`) of each row's language at `step`: int [batch_size]."""
        rng = np.random.default_rng([self.seed, step])
        return rng.choice(len(self.rows), self.batch_size, p=self.probabilities)

    def _visits_before(self, step: int) -> np.ndarray:
        while len(self._visits) <= step:
            s = len(self._visits) - 1
            counts = np.bincount(self.languages(s), minlength=len(self.rows))
            self._visits.append(self._visits[-1] + counts)
        return self._visits[step]

    def _row(self, language: int, visit: int) -> np.ndarray:
        epoch, offset = divmod(visit, len(self.rows[language]))
        key = (language, epoch)
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != language}
            rng = np.random.default_rng([self.seed, language, epoch, 1])
            self._orders[key] = rng.permutation(len(self.rows[language]))
        return self.rows[language][self._orders[key][offset]]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """{input_ids int32 [B, S], attention_mask int32 [B, S], lang_ids int32 [B]}."""
        languages = self.languages(step)
        visits = self._visits_before(step).copy()
        ids = np.empty((self.batch_size, self.seq_len), np.int32)
        for i, language in enumerate(languages):
            ids[i] = self._row(language, visits[language])
            visits[language] += 1
        return {
            "input_ids": ids,
            "attention_mask": (ids != self.pad_id).astype(np.int32),
            "lang_ids": self.lang_ids[languages],
        }


def read_documents(path: str | os.PathLike, max_chars: int | None = None) -> list[str]:
    """A corpus split file (one document per line, UTF-8), optionally its first `max_chars`."""
    documents, total = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            documents.append(line)
            total += len(line)
            if max_chars is not None and total >= max_chars:
                break
    return documents


def tokenize_documents(
    documents: Iterable[str], encode: Callable[[str], Sequence[int]]
) -> list[np.ndarray]:
    """Token ids of each document (without specials): `encode` is e.g.
    `lambda text: tokenizer.encode(text, add_special_tokens=False)`."""
    return [np.asarray(encode(doc), np.int32) for doc in documents]


def corpus_rows(
    folder: str | os.PathLike,
    split: str,
    tokenizer: Any,
    seq_len: int,
    *,
    languages: Sequence[str] | None = None,
    max_chars: int | None = None,
) -> dict[str, np.ndarray]:
    """{code: packed rows int32 [N, seq_len]} from `corpus/build.py`'s `<code>.<split>.txt` files
    (languages: every code with such a file by default), each language's first `max_chars`
    characters tokenized with `tokenizer` (an `XmodTokenizer`) and packed by `pack_rows`."""
    folder = os.fspath(folder)
    suffix = f".{split}.txt"
    found = sorted(f[: -len(suffix)] for f in os.listdir(folder) if f.endswith(suffix))
    codes = found if languages is None else list(languages)
    missing = sorted(set(codes) - set(found))
    if missing:
        raise FileNotFoundError(f"no {split} text for {missing} in {folder} (it has {found})")
    rows = {}
    for code in codes:
        docs = read_documents(os.path.join(folder, code + suffix), max_chars)
        ids = tokenize_documents(docs, lambda t: tokenizer.encode(t, add_special_tokens=False))
        rows[code] = pack_rows(
            ids,
            seq_len,
            bos_id=tokenizer.bos_token_id,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
        )
    return rows
