"""Inference pipelines: fill-mask, sentence embeddings, classification, tagging, extractive QA.

Each function takes `(model, params, tokenizer, texts, lang)`: `texts` is a str (a batch of one)
or a list of str, `lang` one language code for every text or one code per text (None:
`config.default_language`). Results are numpy, one per text, in input order:

    model, params = xj.XmodForMaskedLM.from_pretrained(path)
    tokenizer = xj.XmodTokenizer.from_pretrained(path)
    fill_mask(model, params, tokenizer, "Paris is the <mask> of France.", lang="en_XX")

Mechanics, shared by every function: rows are truncated to the largest length bucket (the smaller
of the tokenizer's `model_max_length` and the model's positions), sorted by length and run
`batch_size` rows at a time, each batch padded to the smallest bucket of `BUCKETS` that holds it
and the last one filled with dummy rows. The jitted forward pass is built once per module and
cached, so it compiles at most once per bucket for a given batch size and params dtype.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from xmod_jax.nn.heads import (
    XmodForMaskedLM,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
    XmodHeadModel,
)
from xmod_jax.nn.module import Params, XmodPreTrainedModule
from xmod_jax.text.tokenizer import XmodTokenizer, as_text_batch

BUCKETS = (16, 32, 64, 128, 256, 512)  # padded sequence lengths, capped at the model's limit
_ENCODE_CHUNK = 1024  # texts tokenized per tokenizer call


class MaskPrediction(NamedTuple):
    """The top-k fillers of one `<mask>`, best first."""

    position: int  # index of the <mask> in the encoded row (<s> is 0)
    token_ids: np.ndarray  # int32 [k]
    tokens: list[str]  # the decoded fillers
    scores: np.ndarray  # float32 [k], softmax probabilities, descending


class FillMaskResults(list):
    """`fill_mask`'s result: a list (per text) of lists (per `<mask>`) of `MaskPrediction`,
    which a notebook shows as a table (text, language, mask, the fillers with their scores)."""

    def __init__(self, predictions: list[list[MaskPrediction]], texts: list[str], langs: list[str]):
        super().__init__(predictions)
        self.texts, self.langs = texts, langs

    def _repr_html_(self) -> str:
        rows = []
        for text, lang, masks in zip(self.texts, self.langs, self, strict=True):
            for k, prediction in enumerate(masks):
                fillers = ", ".join(
                    f"{html.escape(t.strip() or repr(t))} ({p:.3f})"
                    for t, p in zip(prediction.tokens, prediction.scores, strict=True)
                )
                rows.append(
                    f"<tr><td style='text-align:left'>{html.escape(_shorten(text))}</td>"
                    f"<td>{html.escape(lang)}</td><td>{k + 1}</td>"
                    f"<td style='text-align:left'>{fillers}</td></tr>"
                )
        head = "<tr><th>text</th><th>language</th><th>mask</th><th>best fillers (score)</th></tr>"
        return f"<table>{head}{''.join(rows)}</table>"


jax.tree_util.register_pytree_node(  # a pytree like the list it is (jax.tree.map, flatten)
    FillMaskResults,
    lambda r: (list(r), (tuple(r.texts), tuple(r.langs))),
    lambda aux, children: FillMaskResults(list(children), list(aux[0]), list(aux[1])),
)


class Classification(NamedTuple):
    """The best label of one text and the scores of all labels (in `config.id2label` order)."""

    label: str
    score: float
    scores: np.ndarray  # float32 [num_labels]


class TaggedWord(NamedTuple):
    """One word and its label, from the word's first sub-token."""

    word: str
    label: str
    score: float


class Answer(NamedTuple):
    """The best context span: decoded text, score, first and last token (inclusive) in the
    encoded `<s> question </s></s> context </s>` row."""

    text: str
    score: float
    start: int
    end: int


# -------------------------------------------------------------------------------- pipelines
def fill_mask(
    model: XmodForMaskedLM,
    params: Params,
    tokenizer: XmodTokenizer,
    texts: str | Sequence[str],
    lang: str | Sequence[str] | None = None,
    *,
    top_k: int = 5,
    batch_size: int = 32,
    progress: bool = False,
) -> FillMaskResults:
    """Per text, per `<mask>` (in order), the `top_k` most probable tokens (a list of lists of
    `MaskPrediction`, shown as a table in notebooks).

    Each (text, mask) pair is one row of the batch (a text with m masks runs the encoder m
    times) and the LM head runs at the mask only, so logits are [batch_size, V], never
    [batch_size, T, V]. Texts are truncated to the largest bucket (`length_buckets`); a text
    without a `<mask>` in its kept tokens raises `ValueError`.
    """
    if not (isinstance(top_k, int) and top_k >= 1):
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    texts, lang_ids, rows = _prepare(model, tokenizer, texts, lang, XmodForMaskedLM, "fill_mask")
    owners, positions = [], []  # one entry per (text, mask)
    for i, row in enumerate(rows):
        found = np.flatnonzero(row == tokenizer.mask_token_id)
        if not found.size:
            raise ValueError(
                f"texts[{i}] has no {tokenizer.mask_token} within its first {len(row)} tokens: "
                f"{_preview(texts[i])}"
            )
        owners += [i] * found.size
        positions += found.tolist()
    probs = _forward_rows(
        model,
        "fill_mask",
        params,
        tokenizer,
        [rows[i] for i in owners],
        lang_ids[owners],
        (np.asarray(positions, np.int32),),
        batch_size=batch_size,
        progress=progress,
    )
    out: list[list[MaskPrediction]] = [[] for _ in texts]
    for owner, position, (p,) in zip(owners, positions, probs, strict=True):
        k = min(top_k, p.size)
        top = np.argpartition(-p, k - 1)[:k]
        top = top[np.argsort(-p[top], kind="stable")]  # [k], best first
        tokens = [tokenizer.decode([t], skip_special_tokens=False) for t in top]
        out[owner].append(MaskPrediction(position, top.astype(np.int32), tokens, p[top]))
    codes = [model.config.languages[i] for i in lang_ids]
    return FillMaskResults(out, texts, codes)


def embed(
    model: XmodPreTrainedModule,
    params: Params,
    tokenizer: XmodTokenizer,
    texts: str | Sequence[str],
    lang: str | Sequence[str] | None = None,
    *,
    normalize: bool = False,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Sentence embeddings float32 [N, D]: the last hidden state mean-pooled over the attention
    mask (`<s>` and `</s>` included); `normalize=True` scales each row to unit L2 norm.

    `model` is an `XmodModel` or any head model, whose encoder (`roberta`) is used. Texts are
    truncated to the largest bucket (`length_buckets`).
    """
    texts, lang_ids, rows = _prepare(model, tokenizer, texts, lang)
    pooled = _forward_rows(
        model, "embed", params, tokenizer, rows, lang_ids, batch_size=batch_size, progress=progress
    )
    vectors = np.stack([v for (v,) in pooled]).astype(np.float32)  # [N, D]
    if normalize:
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)  # [N, 1]
        vectors = vectors / np.maximum(norms, np.finfo(np.float32).tiny)
    return vectors


def classify(
    model: XmodForSequenceClassification,
    params: Params,
    tokenizer: XmodTokenizer,
    texts: str | Sequence[str],
    lang: str | Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> list[Classification]:
    """Per text the best label of `config.id2label` and every label's score.

    Scores are softmax probabilities, sigmoids for `problem_type="multi_label_classification"`
    (threshold `scores` yourself) and the raw outputs for regression (`problem_type="regression"`
    or `num_labels=1`). Texts are truncated to the largest bucket (`length_buckets`).
    """
    texts, lang_ids, rows = _prepare(
        model, tokenizer, texts, lang, XmodForSequenceClassification, "classify"
    )
    logits = _forward_rows(
        model, "logits", params, tokenizer, rows, lang_ids, batch_size=batch_size, progress=progress
    )
    logits = np.stack([x for (x,) in logits])  # [N, num_labels]
    config = model.config
    if config.problem_type == "multi_label_classification":
        scores = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid, without exp overflow
    elif config.problem_type == "regression" or config.num_labels == 1:
        scores = logits
    else:
        scores = _softmax(logits)
    best = scores.argmax(-1)  # [N]
    return [
        Classification(config.id2label[b], float(s[b]), s.astype(np.float32))
        for b, s in zip(best, scores, strict=True)
    ]


def tag(
    model: XmodForTokenClassification,
    params: Params,
    tokenizer: XmodTokenizer,
    texts: str | Sequence[str],
    lang: str | Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> list[list[TaggedWord]]:
    """Per text its words with the label and softmax score of each word's first sub-token
    (transformers' `aggregation_strategy="first"`).

    Words follow `XmodTokenizer.word_ids` (a new word at each "▁" piece); the word text is
    decoded from its pieces, so it is normalized and unknown characters read `<unk>`. Special
    tokens and padding are left out, and so are words past the truncation to the largest
    bucket (`length_buckets`).
    """
    texts, lang_ids, rows = _prepare(
        model, tokenizer, texts, lang, XmodForTokenClassification, "tag"
    )
    logits = _forward_rows(
        model, "logits", params, tokenizer, rows, lang_ids, batch_size=batch_size, progress=progress
    )
    labels = model.config.id2label
    out = []
    for row, (row_logits,) in zip(rows, logits, strict=True):
        probs = _softmax(row_logits[: len(row)])  # [T, num_labels]
        words = tokenizer.word_ids(row)  # [T]
        tagged = []
        for w in range(words.max(initial=-1) + 1):
            tokens = np.flatnonzero(words == w)
            best = int(probs[tokens[0]].argmax())
            text = tokenizer.decode(row[tokens], skip_special_tokens=False).strip()
            tagged.append(TaggedWord(text, labels[best], float(probs[tokens[0], best])))
        out.append(tagged)
    return out


def answer(
    model: XmodForQuestionAnswering,
    params: Params,
    tokenizer: XmodTokenizer,
    questions: str | Sequence[str],
    contexts: str | Sequence[str],
    lang: str | Sequence[str] | None = None,
    *,
    max_answer_tokens: int = 30,
    batch_size: int = 32,
    progress: bool = False,
) -> list[Answer]:
    """Per (question, context) the best span of context tokens with start <= end and at most
    `max_answer_tokens` tokens.

    score = p_start * p_end, each a softmax of the logits over the context tokens only (as
    transformers' question-answering pipeline). Pairs are encoded `<s> q </s></s> c </s>` and
    truncated longest-first to the largest bucket (`length_buckets`); the answer text is decoded
    from the span's tokens.
    """
    if not (isinstance(max_answer_tokens, int) and max_answer_tokens >= 1):
        raise ValueError(f"max_answer_tokens must be a positive int, got {max_answer_tokens!r}")
    contexts = as_text_batch(contexts, "contexts")
    questions, lang_ids, rows = _prepare(
        model, tokenizer, questions, lang, XmodForQuestionAnswering, "answer", contexts
    )
    logits = _forward_rows(
        model, "qa", params, tokenizer, rows, lang_ids, batch_size=batch_size, progress=progress
    )
    out = []
    for i, (row, (start_logits, end_logits)) in enumerate(zip(rows, logits, strict=True)):
        first, stop = _context_span(row, tokenizer.eos_token_id)
        if first == stop:
            raise ValueError(f"contexts[{i}] has no tokens: {_preview(contexts[i])}")
        p_start = _softmax(start_logits[first:stop])  # [C]
        p_end = _softmax(end_logits[first:stop])  # [C]
        span = np.triu(np.outer(p_start, p_end))  # [C, C]: start <= end
        span = np.tril(span, max_answer_tokens - 1)  # end - start < max_answer_tokens
        s, e = np.unravel_index(span.argmax(), span.shape)
        text = tokenizer.decode(row[first + s : first + e + 1])
        out.append(Answer(text, float(span[s, e]), int(first + s), int(first + e)))
    return out


# ------------------------------------------------------------------------- jitted forwards
def length_buckets(model: XmodPreTrainedModule, tokenizer: XmodTokenizer) -> tuple[int, ...]:
    """The padded lengths the pipelines use: `BUCKETS` below the limit, then the limit, which is
    the smaller of `tokenizer.model_max_length` and the model's positions."""
    limit = min(tokenizer.model_max_length, model.config.max_sequence_length)
    return (*(b for b in BUCKETS if b < limit), limit)


def _encoder_hidden(module: XmodPreTrainedModule, input_ids, lang_ids, attention_mask):
    """The last hidden state [B, T, D] of the module's encoder (a head's `roberta`)."""
    encoder = module.roberta if isinstance(module, XmodHeadModel) else module
    return encoder(input_ids, lang_ids=lang_ids, attention_mask=attention_mask).last_hidden_state


def _mean_pool(module, input_ids, lang_ids, attention_mask):
    """Mean of the hidden states over the attention mask: float32 [B, D]."""
    hidden = _encoder_hidden(module, input_ids, lang_ids, attention_mask).astype(jnp.float32)
    weights = attention_mask.astype(jnp.float32)[..., None]  # [B, T, 1]
    return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)  # [B, D]


def _mask_probabilities(module: XmodForMaskedLM, input_ids, lang_ids, attention_mask, positions):
    """Vocabulary probabilities float32 [B, V] at one position per row (positions int [B]); the
    LM head projects that position only (`logits_positions`)."""
    logits = module(
        input_ids,
        lang_ids=lang_ids,
        attention_mask=attention_mask,
        logits_positions=positions[:, None],
    ).logits  # [B, 1, V]
    return jax.nn.softmax(logits[:, 0], axis=-1)  # float32: the head's logits are float32


def _logits(module, input_ids, lang_ids, attention_mask):
    return module(input_ids, lang_ids=lang_ids, attention_mask=attention_mask).logits


def _span_logits(module, input_ids, lang_ids, attention_mask):
    out = module(input_ids, lang_ids=lang_ids, attention_mask=attention_mask)
    return out.start_logits, out.end_logits  # [B, T] each


_METHODS = {
    "fill_mask": _mask_probabilities,
    "embed": _mean_pool,
    "logits": _logits,
    "qa": _span_logits,
}


@functools.lru_cache(maxsize=32)
def _jitted(model: XmodPreTrainedModule, task: str) -> Callable[..., Any]:
    """`(params, input_ids [B, T], lang_ids [B], attention_mask [B, T], *extra) -> arrays`,
    jitted once per (module, task); modules are hashable, equal modules share the function."""
    method = _METHODS[task]

    def forward(params: Params, *args: jax.Array) -> Any:
        outputs = model.apply({"params": params}, *args, method=method)
        return outputs if isinstance(outputs, tuple) else (outputs,)

    return jax.jit(forward)


# ------------------------------------------------------------------------------ batching
def _forward_rows(
    model: XmodPreTrainedModule,
    task: str,
    params: Params,
    tokenizer: XmodTokenizer,
    rows: list[np.ndarray],
    lang_ids: np.ndarray,
    extra: tuple[np.ndarray, ...] = (),
    *,
    batch_size: int,
    progress: bool,
) -> list[tuple[np.ndarray, ...]]:
    """The task's jitted forward over unpadded rows (int [T_i] each, lang_ids int [N], extra
    per-row arrays [N, ...]) -> per row a tuple of numpy outputs, in row order. Per-token
    outputs keep the bucket's length; slice them to the row's."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    forward = _jitted(model, task)
    buckets = length_buckets(model, tokenizer)
    order = np.argsort([len(r) for r in rows], kind="stable")  # similar lengths share a batch
    results: list[Any] = [None] * len(rows)
    batches = range(0, len(rows), batch_size)
    for start in tqdm(batches, desc=task, unit="batch", disable=not progress):
        index = order[start : start + batch_size]
        width = max(len(rows[i]) for i in index)
        length = next(b for b in buckets if b >= width)
        input_ids = np.full((batch_size, length), tokenizer.pad_token_id, np.int32)  # [B, T]
        attention_mask = np.zeros((batch_size, length), np.int32)  # [B, T]
        # Dummy rows are "<s></s>": valid input whose outputs are dropped.
        input_ids[:, :2] = (tokenizer.bos_token_id, tokenizer.eos_token_id)
        attention_mask[:, :2] = 1
        for b, i in enumerate(index):
            input_ids[b, : len(rows[i])] = rows[i]
            attention_mask[b, : len(rows[i])] = 1
        # Dummy rows take the first row's language: a one-language call stays one-language.
        batch_langs = np.full(batch_size, lang_ids[index[0]], np.int32)  # [B]
        batch_langs[: len(index)] = lang_ids[index]
        batch_extra = []
        for values in extra:
            padded = np.zeros((batch_size, *values.shape[1:]), values.dtype)  # [B, ...]
            padded[: len(index)] = values[index]
            batch_extra.append(padded)
        outputs = jax.device_get(
            forward(params, input_ids, batch_langs, attention_mask, *batch_extra)
        )
        for b, i in enumerate(index):
            results[i] = tuple(np.asarray(x[b]) for x in outputs)
    return results


def _encode(
    model: XmodPreTrainedModule,
    tokenizer: XmodTokenizer,
    texts: list[str],
    pairs: list[str] | None = None,
) -> list[np.ndarray]:
    """Token ids of each text (or pair) with special tokens, truncated to the largest bucket:
    int32 [T_i] each."""
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model's vocabulary only "
            f"{model.config.vocab_size}; load the tokenizer of this checkpoint"
        )
    max_length = length_buckets(model, tokenizer)[-1]
    rows = []
    for start in range(0, len(texts), _ENCODE_CHUNK):
        chunk = slice(start, start + _ENCODE_CHUNK)
        enc = tokenizer(
            texts[chunk], None if pairs is None else pairs[chunk], max_length=max_length
        )
        lengths = enc.attention_mask.sum(-1)  # [B]
        rows += [ids[:n] for ids, n in zip(enc.input_ids, lengths, strict=True)]
    return rows


# ---------------------------------------------------------------------------------- inputs
def _prepare(
    model: XmodPreTrainedModule,
    tokenizer: XmodTokenizer,
    texts: Any,
    lang: Any,
    head: type | None = None,
    task: str = "",
    pairs: list[str] | None = None,
) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """The preamble every pipeline shares: check the head, make the texts a batch, resolve one
    lang id per text and encode -> (texts, lang_ids int32 [N], rows int32 [T_i] each).

    `pairs` (already a batch) are the second segments of `answer`, one per text."""
    if head is not None and not isinstance(model, head):
        raise ValueError(f"{task} needs an {head.__name__}, got {type(model).__name__}")
    texts = as_text_batch(texts, "questions" if pairs is not None else "texts")
    if pairs is not None and len(texts) != len(pairs):
        raise ValueError(f"{len(texts)} questions but {len(pairs)} contexts")
    lang_ids = _lang_ids(model, lang, len(texts))
    return texts, lang_ids, _encode(model, tokenizer, texts, pairs)


def _lang_ids(model: XmodPreTrainedModule, lang: Any, n: int) -> np.ndarray:
    """One code, one code per text or None (the default language) -> int32 lang ids [n]."""
    config = model.config
    if lang is None:
        return np.full(n, config.default_lang_id(how="lang= (one code, or one per text)"), np.int32)
    if isinstance(lang, str):
        return np.full(n, config.lang_ids(lang), np.int32)
    codes = list(lang)
    if len(codes) != n:
        raise ValueError(f"lang has {len(codes)} codes for {n} texts; pass one, or one per text")
    return config.lang_ids(codes)


def _context_span(row: np.ndarray, eos: int) -> tuple[int, int]:
    """[first, stop) of the context in `<s> q </s></s> c </s>`: after the first `</s></s>`."""
    pairs = np.flatnonzero((row[:-1] == eos) & (row[1:] == eos))
    assert pairs.size, "an encoded pair holds </s></s>"
    return int(pairs[0]) + 2, len(row) - 1


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _preview(text: str, limit: int = 60) -> str:
    return repr(_shorten(text, limit))
