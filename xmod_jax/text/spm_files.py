"""sentencepiece model files and transformers' `tokenizer.json`, read and written without protobuf.

A sentencepiece `ModelProto` is written and read with a small protobuf wire-format codec (field
numbers from sentencepiece_model.proto), so the tokenizer needs neither protobuf nor `tokenizers`.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from xmod_jax.errors import CheckpointError

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq ids 0, 1, 2, 3
MASK_TOKEN = "<mask>"
# sentencepiece_model.proto: SentencePiece.Type and TrainerSpec.ModelType values.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4
UNIGRAM = 1
_FLOAT = struct.Struct("<f")


def read_spm_model(
    data: bytes, name: str
) -> tuple[list[tuple[str, float]], bytes, list[tuple[str, int, bool]]]:
    """Fairseq vocabulary, character map and literal tokens of a sentencepiece model file."""
    pieces, trainer, normalizer = [], None, None
    try:
        for number, value in _fields(data):
            if number == 1:
                pieces.append(_read_piece(value))
            elif number == 2:
                trainer = value
            elif number == 3:
                normalizer = value
        if trainer is None or normalizer is None:
            # sentencepiece writes both after the pieces: a file cut between two pieces would
            # otherwise read as a smaller vocabulary.
            raise ValueError("no trainer and normalizer specs after the pieces; truncated?")
        model_type = dict(_fields(trainer)).get(3, UNIGRAM)
        charsmap = dict(_fields(normalizer)).get(2, b"")
    except (IndexError, ValueError, TypeError, AttributeError, struct.error) as e:
        # TypeError / AttributeError: a field of the wrong wire type (an int for a message).
        raise CheckpointError(f"{name} is not a sentencepiece model ({e})") from None
    if model_type != UNIGRAM:
        kind = {2: "BPE", 3: "word", 4: "char"}.get(model_type, str(model_type))
        raise CheckpointError(
            f"{name} is a {kind} sentencepiece model; XmodTokenizer reads unigram models, "
            "the kind XLM-R uses (train with model_type='unigram')"
        )
    if [kind for _, _, kind in pieces[:3]] != [UNKNOWN, CONTROL, CONTROL]:
        raise CheckpointError(
            f"{name} does not start with the pieces <unk>, <s>, </s> (ids 0, 1, 2) as XLM-R's "
            f"does; got {[piece for piece, _, _ in pieces[:3]]}"
        )
    vocab = [(t, 0.0) for t in SPECIAL_TOKENS]
    vocab += [(piece, score) for piece, score, _ in pieces[3:]] + [(MASK_TOKEN, 0.0)]
    # transformers cuts control and user-defined pieces out of raw text; control ones are special.
    added = [
        (piece, i + 1, kind == CONTROL)
        for i, (piece, _, kind) in enumerate(pieces)
        if i >= 3 and kind in (CONTROL, USER_DEFINED)
    ]
    return vocab, charsmap, added


def _read_piece(message: bytes) -> tuple[str, float, int]:
    """(piece, score, type) of a SentencePiece message."""
    # Fast path for the usual layout, piece (1) then score (2) then an optional type (3): the
    # XLM-R model has 250k pieces.
    size = message[1] if len(message) > 1 else 0x80
    if message[0] == 0x0A and size < 0x80 and message[2 + size : 3 + size] == b"\x15":
        rest = message[7 + size :]
        if not rest or (len(rest) == 2 and rest[0] == 0x18 and rest[1] < 0x80):
            (score,) = _FLOAT.unpack_from(message, 3 + size)
            return message[2 : 2 + size].decode(), score, rest[1] if rest else NORMAL
    piece, score, kind = "", 0.0, NORMAL
    for number, value in _fields(message):
        if number == 1:
            piece = value.decode()
        elif number == 2:
            (score,) = _FLOAT.unpack(value)
        elif number == 3:
            kind = value
    return piece, score, kind


def read_tokenizer_json(
    path: str,
) -> tuple[list[tuple[str, float]], bytes, list[tuple[str, int, bool]]]:
    """Vocabulary, character map and added tokens of a transformers `tokenizer.json`."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    try:
        return _tokenizer_json_parts(data, path)
    except CheckpointError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # base64 errors included
        raise CheckpointError(f"{path}: not a transformers tokenizer.json ({e!r})") from None


def _tokenizer_json_parts(
    data: Any, path: str
) -> tuple[list[tuple[str, float]], bytes, list[tuple[str, int, bool]]]:
    model = data.get("model") or {}
    if model.get("type") != "Unigram" or not isinstance(model.get("vocab"), list):
        raise CheckpointError(
            f"{path} holds a {model.get('type')!r} model; XmodTokenizer reads the Unigram model "
            "of XLM-R tokenizers (or pass a folder with sentencepiece.bpe.model)"
        )
    vocab = [(piece, score) for piece, score in model["vocab"]]
    # Like transformers 5.x, keep only the Precompiled map: its XLM-R class rebuilds the rest.
    normalizer = data.get("normalizer") or {}
    charsmap = b""
    for entry in normalizer.get("normalizers", [normalizer]):
        if entry.get("type") == "Precompiled":
            charsmap = base64.b64decode(entry.get("precompiled_charsmap") or "")
            break
    added = [(t["content"], t["id"], bool(t.get("special"))) for t in data.get("added_tokens", [])]
    return vocab, charsmap, added


def segmenter_proto(vocab: Sequence[tuple[str, float]]) -> bytes:
    """A sentencepiece model whose id s is fairseq id s - 1: an unknown piece, then `vocab`.

    Normalization and whitespace handling happen before it, so its normalizer is the identity.
    """
    taken = {piece for piece, _ in vocab}
    unknown = "<unk>"
    while unknown in taken:  # the unknown piece needs a name of its own
        unknown += "#"
    pieces = [(unknown, 0.0, UNKNOWN)] + [(piece, score, NORMAL) for piece, score in vocab]
    trainer = [(3, UNIGRAM), (4, len(pieces)), (40, 0), (41, -1), (42, -1), (43, -1)]
    normalizer = [(1, "identity"), (3, 0), (4, 0), (5, 0)]
    return model_proto(pieces, trainer, normalizer)


def model_proto(
    pieces: Iterable[tuple[str, float, int]],
    trainer: Iterable[tuple[int, Any]],
    normalizer: Iterable[tuple[int, Any]],
) -> bytes:
    """Serialized sentencepiece ModelProto: pieces (1), trainer spec (2), normalizer spec (3)."""
    out = bytearray()
    for piece, score, kind in pieces:
        data = piece.encode()
        message = b"\x0a" + _varint(len(data)) + data + b"\x15" + _FLOAT.pack(score)
        message += b"\x18" + _varint(kind)
        out += b"\x0a" + _varint(len(message)) + message
    out += _field(2, b"".join(_field(n, v) for n, v in trainer))
    out += _field(3, b"".join(_field(n, v) for n, v in normalizer))
    return bytes(out)


def _field(number: int, value: int | float | str | bytes) -> bytes:
    """One protobuf field: float as fixed32, str / bytes length-delimited, int as varint."""
    if isinstance(value, float):
        return _varint(number << 3 | 5) + _FLOAT.pack(value)
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return bytes((value,))
    value &= (1 << 64) - 1  # negative int32 fields are written as 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) of a protobuf message: int for varints, bytes for the rest."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire in (1, 2, 5):
            if wire == 2:
                size, pos = _read_varint(buf, pos)
            else:
                size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
            if pos > len(buf):
                raise ValueError("truncated message")
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
