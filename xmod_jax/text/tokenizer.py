"""`XmodTokenizer`: XLM-R's sentencepiece tokenizer with fairseq ids, on `sentencepiece` alone.

Ids follow fairseq and transformers' `XLMRobertaTokenizer`: `<s>`=0, `<pad>`=1, `</s>`=2,
`<unk>`=3, sentencepiece piece p -> p + 1, `<mask>` last. Text is split the way transformers 5.x
splits it (its tokenizer is built on the `tokenizers` library, not on sentencepiece):

1. the special tokens are cut out of the raw text (`<mask>`, `<s>`, ... anywhere in a string);
2. every other span is normalized with the sentencepiece model's precompiled character map,
   grapheme by grapheme as `tokenizers`' `Precompiled` normalizer does;
3. the result is split at whitespace, "▁" is prepended to every word, words are split before
   each "▁" they contain, and each piece is segmented by unigram Viterbi, the special tokens
   included in the vocabulary with score 0.

Step 3 runs in sentencepiece on a model rebuilt from the vocabulary with an identity normalizer,
so `sentencepiece.bpe.model` and the unigram model inside a `tokenizer.json` load the same way.
The model file is read and written with a small protobuf wire-format codec, so protobuf is not
needed. Outputs hold int32 numpy arrays `input_ids` and `attention_mask`, both [B, T].
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import sentencepiece as spm

from xmod_jax.atomic import readable_folder, updated_folder
from xmod_jax.errors import CheckpointError
from xmod_jax.hub import BUNDLED_MODEL, REPO_ID, resolve_folder
from xmod_jax.text.normalizer import PrecompiledNormalizer
from xmod_jax.text.spm_files import (
    CONTROL,
    MASK_TOKEN,
    NORMAL,
    SPECIAL_TOKENS,
    UNIGRAM,
    UNKNOWN,
    USER_DEFINED,
    model_proto,
    read_spm_model,
    read_tokenizer_json,
    segmenter_proto,
)

SPM_FILE = "sentencepiece.bpe.model"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
DEFAULT_MAX_LENGTH = 512
SPACE = "\u2581"  # "▁", sentencepiece's visible space
_CACHE_SIZE = 1 << 16  # pieces whose ids are remembered

# Rust's `char::is_whitespace`, which `tokenizers`' WhitespaceSplit uses (Python's isspace differs).
_WHITESPACE = re.compile("[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_WORD_PIECES = re.compile(f"{SPACE}[^{SPACE}]*")


class Encoding(dict):
    """Tokenizer output: a dict with attribute access (`enc.input_ids`, `enc["input_ids"]`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"Encoding has no {name!r}; keys: {', '.join(self)}") from None


class XmodTokenizer:
    """XLM-R / X-MOD tokenizer with fairseq ids, matching transformers' `XLMRobertaTokenizer`.

    Build it with `XmodTokenizer.from_pretrained(folder)` or `XmodTokenizer(model_file=path)`.
    """

    def __init__(
        self,
        model_file: str | os.PathLike | None = None,
        model_max_length: int = DEFAULT_MAX_LENGTH,
        *,
        vocab: Sequence[tuple[str, float]] | None = None,
        charsmap: bytes = b"",
        added_tokens: Iterable[tuple[str, int, bool]] = (),
    ):
        """Loads a sentencepiece unigram model file, or takes fairseq-ordered `vocab` pieces.

        `vocab` [(piece, score)] must start with `<s> <pad> </s> <unk>` and end with `<mask>`;
        `charsmap` is the precompiled normalization map; `added_tokens` lists (content, id,
        special) for further tokens cut out of raw text.
        """
        if (model_file is None) == (vocab is None):
            raise ValueError("pass exactly one of model_file= (a sentencepiece model) or vocab=")
        self._model_bytes = None
        if model_file is not None:
            with open(model_file, "rb") as f:
                self._model_bytes = f.read()
            vocab, charsmap, added_tokens = read_spm_model(self._model_bytes, str(model_file))
        vocab = [(str(piece), float(score)) for piece, score in vocab]
        if tuple(p for p, _ in vocab[:4]) != SPECIAL_TOKENS or vocab[-1][0] != MASK_TOKEN:
            raise ValueError(
                f"vocab must start with {' '.join(SPECIAL_TOKENS)} and end with {MASK_TOKEN} "
                f"(fairseq / XLM-R order); got {[p for p, _ in vocab[:4]]} ... {vocab[-1][0]!r}"
            )
        if not (isinstance(model_max_length, int) and model_max_length > 0):
            raise ValueError(f"model_max_length must be a positive int, got {model_max_length!r}")
        self.model_max_length = model_max_length
        self._vocab = vocab
        self._token_to_id = {piece: i for i, (piece, _) in reversed(list(enumerate(vocab)))}
        self._normalizer = PrecompiledNormalizer(charsmap)
        literal = {t: i for i, t in enumerate(SPECIAL_TOKENS)} | {MASK_TOKEN: len(vocab) - 1}
        self._special_ids = set(literal.values())
        for content, token_id, special in added_tokens:
            if not content or not 0 <= token_id < len(vocab) or vocab[token_id][0] != content:
                raise ValueError(
                    f"added token {content!r} has id {token_id}, which is not that piece of the "
                    f"{len(vocab)}-piece vocabulary; tokens beyond the vocabulary are unsupported"
                )
            literal[content] = token_id
            if special:
                self._special_ids.add(token_id)
        self._literal = literal
        # Longest first, so a token that contains another wins, as in tokenizers' leftmost-longest.
        alternatives = sorted(literal, key=len, reverse=True)
        self._literal_re = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=segmenter_proto(vocab))
        except RuntimeError as e:  # e.g. a piece listed twice
            raise ValueError(f"sentencepiece rejects this vocabulary: {e}") from None
        self._cache: dict[str, list[int]] = {}
        self._word_starts: np.ndarray | None = None  # bool [V], built by the first word_ids

    # ---------------------------------------------------------------- loading and saving

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, model_max_length: int | None = None
    ) -> XmodTokenizer:
        """Loads `sentencepiece.bpe.model`, else the unigram model in `tokenizer.json`.

        `path` is a folder, a hub name ("facebook/xmod-base") or the bundled model's name
        (`xmod_jax.BUNDLED_MODEL`); `model_max_length` defaults
        to the one in `tokenizer_config.json`, else 512.
        """
        folder = _resolve_folder(path)
        if model_max_length is None:
            model_max_length = _config_max_length(folder)
        spm_path = os.path.join(folder, SPM_FILE)
        json_path = os.path.join(folder, TOKENIZER_FILE)
        if os.path.isfile(spm_path):
            with _naming(spm_path):
                return cls(model_file=spm_path, model_max_length=model_max_length)
        if os.path.isfile(json_path):
            vocab, charsmap, added = read_tokenizer_json(json_path)
            with _naming(json_path):
                return cls(
                    vocab=vocab,
                    charsmap=charsmap,
                    added_tokens=added,
                    model_max_length=model_max_length,
                )
        raise CheckpointError(
            f"no tokenizer in {folder!r}: looked for {SPM_FILE} and {TOKENIZER_FILE}; copy the "
            "tokenizer files of the checkpoint (e.g. FacebookAI/xlm-roberta-base) into it"
        )

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Writes sentencepiece.bpe.model and tokenizer_config.json, loadable by transformers.

        Like the weights, the folder changes at once (`atomic.updated_folder`): the two files are
        written into a temporary sibling beside links to the folder's other files, which is
        swapped in, so a crash at any instant leaves the complete old or new folder.
        """
        model = self._model_bytes if self._model_bytes is not None else self._spm_file_proto()
        config = {
            "tokenizer_class": "XLMRobertaTokenizer",
            "model_max_length": self.model_max_length,
            "mask_token": MASK_TOKEN,
        }
        text = json.dumps(config, indent=2) + "\n"
        with updated_folder(folder) as tmp:
            for name, data in ((SPM_FILE, model), (TOKENIZER_CONFIG_FILE, text.encode())):
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)

    def _spm_file_proto(self) -> bytes:
        """An XLM-R style sentencepiece model: `<unk> <s> </s>`, then fairseq ids 4.. less one."""
        pieces = [("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("</s>", 0.0, CONTROL)]
        for i, (piece, score) in enumerate(self._vocab[4:-1], start=4):
            kind = NORMAL
            if self._literal.get(piece) == i:
                kind = CONTROL if i in self._special_ids else USER_DEFINED
            pieces.append((piece, score, kind))
        charsmap = self._normalizer.blob
        normalizer = [(1, "nmt_nfkc" if charsmap else "identity"), (2, charsmap)]
        normalizer += [(3, 1), (4, 1), (5, 1)]  # dummy prefix, remove and escape whitespace
        trainer = [(3, UNIGRAM), (4, len(pieces)), (40, 0), (41, 1), (42, 2)]
        return model_proto(pieces, trainer, normalizer)

    # ---------------------------------------------------------------- properties

    @property
    def vocab_size(self) -> int:
        """Number of ids, `<mask>` included (250002 for XLM-R)."""
        return len(self._vocab)

    def __len__(self) -> int:
        return len(self._vocab)

    @property
    def bos_token_id(self) -> int:
        return 0

    @property
    def pad_token_id(self) -> int:
        return 1

    @property
    def eos_token_id(self) -> int:
        return 2

    @property
    def unk_token_id(self) -> int:
        return 3

    @property
    def mask_token_id(self) -> int:
        return len(self._vocab) - 1

    @property
    def mask_token(self) -> str:
        return MASK_TOKEN

    def __repr__(self) -> str:
        return f"XmodTokenizer(vocab_size={len(self)}, model_max_length={self.model_max_length})"

    # ---------------------------------------------------------------- encoding

    def __call__(
        self,
        texts: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        padding: bool | str = True,
        truncation: bool | str = True,
        max_length: int | None = None,
    ) -> Encoding:
        """Encodes a batch as `<s> A </s>` or `<s> A </s></s> B </s>`, right-padded with `<pad>`.

        `padding`: True / "longest" pads to the longest row, "max_length" to `max_length`, False
        needs rows of equal length. `truncation` (True / "longest_first") cuts the longer text
        first down to `max_length` (default `model_max_length`), keeping the special tokens.
        Returns `input_ids`, `attention_mask`: int32 [B, T].
        """
        texts = as_text_batch(texts, "texts")
        pairs = None if text_pair is None else as_text_batch(text_pair, "text_pair")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"text_pair has {len(pairs)} texts but texts has {len(texts)}")
        padding = _check_option("padding", padding, ("longest", "max_length", "do_not_pad"))
        truncation = _check_option("truncation", truncation, ("longest_first", "do_not_truncate"))
        if max_length is not None and not (isinstance(max_length, int) and max_length > 0):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        limit = self.model_max_length if max_length is None else max_length

        ids = self._encode_batch(texts + (pairs or []))
        rows = []
        for i in range(len(texts)):
            first, second = ids[i], None if pairs is None else ids[len(texts) + i]
            if truncation == "longest_first":
                first, second = _truncate(first, second, limit)
            rows.append(self._with_specials(first, second))

        width = max(len(row) for row in rows)
        if padding == "max_length" and width > limit:
            raise ValueError(
                f"a row has {width} tokens, more than max_length={limit}, and truncation=False; "
                "pass truncation=True or padding=True"
            )
        if padding == "max_length":
            width = limit
        elif padding == "do_not_pad" and any(len(row) != width for row in rows):
            lengths = sorted({len(row) for row in rows})
            raise ValueError(
                f"rows have different lengths {lengths} and padding=False; pass padding=True"
            )
        input_ids = np.full((len(rows), width), self.pad_token_id, np.int32)  # [B, T]
        attention_mask = np.zeros((len(rows), width), np.int32)  # [B, T]
        for b, row in enumerate(rows):
            input_ids[b, : len(row)] = row
            attention_mask[b, : len(row)] = 1
        return Encoding(input_ids=input_ids, attention_mask=attention_mask)

    def encode(
        self, text: str, text_pair: str | None = None, add_special_tokens: bool = True
    ) -> list[int]:
        """Ids of one text (or pair), without truncation or padding."""
        texts = [text] if text_pair is None else [text, text_pair]
        ids = self._encode_batch(as_text_batch(texts, "text"))
        if not add_special_tokens:
            return [i for row in ids for i in row]
        return self._with_specials(ids[0], ids[1] if len(ids) > 1 else None)

    def tokenize(self, text: str) -> list[str]:
        """Pieces of one text, without special tokens added."""
        return self.convert_ids_to_tokens(self.encode(text, add_special_tokens=False))

    def word_ids(self, input_ids: Any) -> np.ndarray:
        """Word index of each token, -1 for `<s>`, `</s>` and `<pad>`: int [B, T] -> int32 [B, T].

        As transformers' `word_ids()` for XLM-R: a word starts at each piece beginning with "▁"
        and at each token cut out of the raw text (`<mask>`, added tokens); the pieces after it,
        `<unk>` included, belong to it. Words are counted from 0 along the whole row (both texts
        of a pair). Also takes one row [T].
        """
        ids = np.asarray(input_ids)
        if ids.ndim not in (1, 2):
            raise ValueError(f"word_ids takes ids of shape [T] or [B, T], got {ids.shape}")
        ids = np.asarray(self._check_ids(ids.reshape(-1)), np.int64).reshape(ids.shape)
        if self._word_starts is None:
            starts = np.array([piece.startswith(SPACE) for piece, _ in self._vocab])  # [V]
            starts[[i for i in self._literal.values() if i != self.unk_token_id]] = True
            self._word_starts = starts
        outside = np.isin(ids, (self.bos_token_id, self.pad_token_id, self.eos_token_id))
        after_outside = np.concatenate(
            [np.ones_like(outside[..., :1]), outside[..., :-1]], axis=-1
        )  # a row's first content token starts a word whatever its piece
        starts = ~outside & (self._word_starts[ids] | after_outside)
        return np.where(outside, -1, np.cumsum(starts, axis=-1) - 1).astype(np.int32)

    def _with_specials(self, first: list[int], second: list[int] | None) -> list[int]:
        bos, eos = self.bos_token_id, self.eos_token_id
        if second is None:
            return [bos, *first, eos]
        return [bos, *first, eos, eos, *second, eos]

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text, without special tokens added."""
        rows = []
        for text in texts:
            row: list[int] = []
            for k, span in enumerate(self._literal_re.split(text)):
                if k % 2:  # odd positions hold the matched literal tokens
                    row.append(self._literal[span])
                    continue
                for word in _WHITESPACE.split(self._normalizer(span)):
                    if word:
                        word = word if word[0] == SPACE else SPACE + word
                        for piece in _WORD_PIECES.findall(word):
                            row.extend(self._piece_ids(piece))
            rows.append(row)
        return rows

    def _piece_ids(self, piece: str) -> list[int]:
        """Fairseq ids of one "▁"-led piece, cached: words repeat and a call costs microseconds."""
        ids = self._cache.get(piece)
        if ids is None:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            # Segmenter id s is fairseq id s - 1; its unknown piece, id 0, is <unk> (3).
            ids = self._cache[piece] = [s - 1 if s else 3 for s in self._sp.encode(piece)]
        return ids

    # ---------------------------------------------------------------- decoding

    def convert_ids_to_tokens(self, ids: int | Sequence[int] | np.ndarray) -> str | list[str]:
        """Piece strings of `ids` (a single id gives a single string)."""
        if isinstance(ids, int | np.integer):
            return self._vocab[self._check_ids([int(ids)])[0]][0]
        return [self._vocab[i][0] for i in self._check_ids(ids)]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Ids of piece strings; unknown pieces give `unk_token_id`."""
        if isinstance(tokens, str):
            return self._token_to_id.get(tokens, self.unk_token_id)
        return [self._token_to_id.get(t, self.unk_token_id) for t in tokens]

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str | list[str]:
        """Text of `ids`: int [T] (list, numpy or jax array) gives a str, [B, T] a list of str.

        Unlike transformers, `skip_special_tokens` defaults to True; out-of-range ids raise.
        """
        if isinstance(ids, list | tuple) and ids and isinstance(ids[0], list | tuple | np.ndarray):
            return self.batch_decode(ids, skip_special_tokens)  # rows may differ in length
        array = np.asarray(ids)
        if array.ndim == 2:
            return self.batch_decode(array, skip_special_tokens)
        if array.ndim > 2:
            raise ValueError(f"decode takes ids of shape [T] or [B, T], got {array.shape}")
        ids = self._check_ids(array.reshape(-1))
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        # tokenizers' Metaspace decoder: "▁" is a space, except in the first piece where it goes.
        tokens = [self._vocab[i][0] for i in ids]
        return "".join(t.replace(SPACE, "" if k == 0 else " ") for k, t in enumerate(tokens))

    def batch_decode(self, ids: Any, skip_special_tokens: bool = True) -> list[str]:
        """`decode` of each row of int [B, T] ids (or a list of id lists)."""
        if isinstance(ids, list | tuple):
            return [self.decode(row, skip_special_tokens) for row in ids]
        return [self.decode(row, skip_special_tokens) for row in np.asarray(ids)]

    def _check_ids(self, ids: Iterable[Any]) -> list[int]:
        array = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"token ids must be integers, got dtype {array.dtype}")
        bad = array[(array < 0) | (array >= len(self._vocab))]
        if bad.size:
            raise ValueError(
                f"token ids {sorted(set(bad.tolist()))[:5]} are outside the vocabulary "
                f"[0, {len(self._vocab)})"
            )
        return array.astype(np.int64).tolist()


# -------------------------------------------------------------------- input checks


def as_text_batch(texts: Any, name: str) -> list[str]:
    """`texts` as a non-empty list of str; a single str is a batch of one."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, bytes | bytearray | memoryview):  # a Sequence too, of ints
        raise TypeError(f"{name} is {_bytes_hint(texts)}")
    if not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a str or a list of str, got {type(texts).__name__}")
    if not texts:
        raise ValueError(f"{name} is empty; pass a str or a non-empty list of str")
    for i, text in enumerate(texts):
        if isinstance(text, bytes | bytearray | memoryview):
            raise TypeError(f"{name}[{i}] is {_bytes_hint(text)}")
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is a {type(text).__name__}, not a str")
    return list(texts)


def _bytes_hint(value: bytes | bytearray | memoryview) -> str:
    return f"{type(value).__name__}, not str: decode the bytes first, e.g. .decode('utf-8')"


def _check_option(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """`value` as one of `choices`; True is the first, False the last."""
    if value is True or value is False:
        return choices[0] if value else choices[-1]
    if isinstance(value, str) and value in choices:
        return value
    raise ValueError(f"{name}={value!r} is not supported; use True, False or one of {choices}")


def _truncate(
    first: list[int], second: list[int] | None, max_length: int
) -> tuple[list[int], list[int] | None]:
    """transformers' "longest_first": trims the longer text first, leaving room for specials."""
    specials = 2 if second is None else 4
    if len(first) + len(second or ()) + specials <= max_length:
        return first, second
    room = max_length - specials
    if room < 0:
        raise ValueError(
            f"max_length={max_length} leaves no room for the {specials} special tokens; "
            f"pass max_length >= {specials}"
        )
    if second is None:
        return first[:room], None
    # The arithmetic of tokenizers' TruncationStrategy::LongestFirst, n1 for the shorter text.
    n1, n2 = sorted((len(first), len(second)))
    n2 = n1 if n1 > room else max(n1, room - n1)
    if n1 + n2 > room:
        n1, n2 = room // 2, room // 2 + room % 2
    if len(first) > len(second):
        n1, n2 = n2, n1
    return first[:n1], second[:n2]


# -------------------------------------------------------------------- loading


def _resolve_folder(path: str | os.PathLike) -> str:
    """The local folder for `path`: the bundled model's, a folder, or a hub name fetched by
    `xmod_jax.hub`."""
    if os.fspath(path) == BUNDLED_MODEL:  # the name wins over a local folder, as for models
        return resolve_folder(path)
    path = readable_folder(path)  # a save killed mid-swap leaves the previous folder aside
    if os.path.isdir(path):
        return path
    if os.path.isfile(path):
        raise CheckpointError(
            f"{path!r} is a file; pass its folder, or use XmodTokenizer(model_file={path!r})"
        )
    if not REPO_ID.match(path):
        raise CheckpointError(
            f"no folder {path!r}; pass a folder holding {SPM_FILE} or {TOKENIZER_FILE}, "
            "or a hub name such as 'facebook/xmod-base'"
        )
    return resolve_folder(path)


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """A ValueError about the vocabulary read from `path` becomes a CheckpointError naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _config_max_length(folder: str) -> int:
    """`model_max_length` from the folder's tokenizer_config.json, else 512 (also for
    transformers' "no limit", int(1e30)); a value of another type raises naming the file."""
    path = os.path.join(folder, TOKENIZER_CONFIG_FILE)
    if not os.path.isfile(path):
        return DEFAULT_MAX_LENGTH
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); fix or delete it") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    value = config.get("model_max_length")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value is None or (number and value >= 10**9):
        return DEFAULT_MAX_LENGTH  # transformers writes int(1e30) for "no limit"
    if not (isinstance(value, int) and number and value > 0):
        raise CheckpointError(
            f"{path}: model_max_length must be a positive int, got {value!r}; fix or delete it"
        )
    return value
