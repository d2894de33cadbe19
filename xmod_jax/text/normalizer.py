"""sentencepiece's precompiled character map, applied grapheme by grapheme as `tokenizers` does.

transformers 5.x normalizes XLM-R text with `tokenizers`' `Precompiled` normalizer, not with
sentencepiece itself; `PrecompiledNormalizer` reproduces it, including its grapheme-level quirks.
Grapheme boundaries follow Unicode's extended grapheme clusters approximately (Python's
`unicodedata` lacks the break properties).
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Iterator
from functools import lru_cache

import numpy as np


class PrecompiledNormalizer:
    """sentencepiece's precompiled character map, applied as `tokenizers`' Precompiled does."""

    def __init__(self, blob: bytes):
        self.blob = bytes(blob)
        self._units: list[int] = []
        self._targets = b""
        self._chars: dict[str, str] = {}
        if blob:
            # Layout: trie size (uint32), darts-clone double-array trie, NUL-separated targets.
            (size,) = struct.unpack_from("<I", blob)
            self._units = np.frombuffer(blob[4 : 4 + size], "<u4").tolist()
            self._targets = self.blob[4 + size :]

    def __call__(self, text: str) -> str:
        if not self._units:
            return text
        if text.isascii():  # one character per grapheme, bar "\r\n" which maps to spaces anyway
            return "".join(map(self._char, text))
        out = []
        for grapheme in _graphemes(text):
            # tokenizers' quirk: a grapheme under 6 bytes is replaced whole by the target of the
            # shortest key that is a prefix of it ("①\u0301" -> "1"); others go char by char.
            if len(grapheme) > 1 and len(grapheme.encode()) < 6:
                target = self._lookup(grapheme)
                if target is not None:
                    out.append(target)
                    continue
            out.extend(map(self._char, grapheme))
        return "".join(out)

    def _char(self, char: str) -> str:
        target = self._chars.get(char)
        if target is None:
            found = self._lookup(char)
            target = self._chars[char] = char if found is None else found
        return target

    def _lookup(self, text: str) -> str | None:
        """Target of the shortest key that is a prefix of `text`, or None."""
        units = self._units
        pos = _offset(units[0])
        for byte in text.encode():
            pos ^= byte
            if pos >= len(units):
                return None
            unit = units[pos]
            if unit & 0x800000FF != byte:  # the unit's label
                return None
            pos ^= _offset(unit)
            if unit >> 8 & 1:  # a key ends here; its leaf unit holds the target's offset
                start = units[pos] & 0x7FFFFFFF
                end = self._targets.find(b"\0", start)
                return self._targets[start : end if end >= 0 else None].decode(errors="replace")
        return None


def _offset(unit: int) -> int:
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)


# Approximate Grapheme_Cluster_Break classes (Python's unicodedata does not expose the property).
_PREPEND = frozenset([*range(0x600, 0x606), 0x6DD, 0x70F, 0x890, 0x891, 0x8E2, 0x110BD, 0x110CD])
_HANGUL = frozenset(
    [("L", c) for c in ("L", "V", "LV", "LVT")]
    + [(a, b) for a in ("LV", "V") for b in ("V", "T")]
    + [("LVT", "T"), ("T", "T")]
)


@lru_cache(maxsize=1 << 16)
def _break_class(char: str) -> str:
    code = ord(char)
    if char in "\r\n":
        return "CR" if char == "\r" else "LF"
    if code == 0x200D:
        return "ZWJ"
    if 0x1100 <= code <= 0x115F or 0xA960 <= code <= 0xA97C:
        return "L"
    if 0x1160 <= code <= 0x11A7 or 0xD7B0 <= code <= 0xD7C6:
        return "V"
    if 0x11A8 <= code <= 0x11FF or 0xD7CB <= code <= 0xD7FB:
        return "T"
    if 0xAC00 <= code <= 0xD7A3:
        return "LV" if (code - 0xAC00) % 28 == 0 else "LVT"
    if 0x1F1E6 <= code <= 0x1F1FF:
        return "RI"
    if code in _PREPEND:
        return "Prepend"
    if code in (0x0E33, 0x0EB3):  # Thai and Lao sara am are letters (Lo) but SpacingMark
        return "SpacingMark"
    category = unicodedata.category(char)
    if (
        category in ("Mn", "Me")
        or code == 0x200C
        or 0xFF9E <= code <= 0xFF9F
        or 0x1F3FB <= code <= 0x1F3FF
        or 0xE0020 <= code <= 0xE007F
    ):
        return "Extend"
    if category == "Mc":
        return "SpacingMark"
    if category in ("Cc", "Cf", "Zl", "Zp"):
        return "Control"
    if category == "So" or 0x1F000 <= code <= 0x1FFFD:
        return "Pictographic"
    return "Other"


def _joins(prev: str, cls: str, emoji: str, regional: int) -> bool:
    """Whether a character of class `cls` continues the grapheme ending in class `prev`."""
    if prev == "CR":
        return cls == "LF"
    if prev in ("Control", "LF") or cls in ("Control", "CR", "LF"):
        return False
    if (prev, cls) in _HANGUL or cls in ("Extend", "ZWJ", "SpacingMark") or prev == "Prepend":
        return True
    if prev == "ZWJ" and cls == "Pictographic" and emoji == "zwj":
        return True
    return prev == cls == "RI" and regional % 2 == 1


def _graphemes(text: str) -> Iterator[str]:
    """Extended grapheme clusters of `text` (Unicode UAX #29, with the classes above)."""
    start, prev, emoji, regional = 0, "", "", 0
    for i, char in enumerate(text):
        cls = _break_class(char)
        if i and not _joins(prev, cls, emoji, regional):
            yield text[start:i]
            start = i
        if cls == "Pictographic":
            emoji = "pict"
        elif not (emoji == "pict" and cls == "Extend"):
            emoji = "zwj" if emoji == "pict" and cls == "ZWJ" else ""
        regional = regional + 1 if cls == "RI" else 0
        prev = cls
    if text:
        yield text[start:]
