"""Shingling: text -> the set of byte strings that MinHash summarizes.

Every step is explicit configuration (:class:`ShingleConfig`) and happens in this order:

1. Unicode normalization (``NFKC`` by default, or ``NFC``/``NFD``/``NFKD``/``None``).
2. Lowercasing (``str.lower``), on by default.
3. Punctuation (characters of Unicode category ``P*``): ``"keep"`` leaves them in place,
   ``"remove"`` deletes them (``"don't"`` -> ``"dont"``), ``"space"`` turns them into word
   separators (``"don't"`` -> ``"don"``, ``"t"``).
4. Whitespace: the text is split on Unicode whitespace and re-joined with single spaces.
   The result is the *normalized text*; it never starts or ends with a space.
5. Pieces: words (``unit="word"``, split at the spaces) or Unicode code points
   (``unit="char"``, spaces included).
6. Shingles: every run of ``n`` consecutive pieces, joined exactly as in the normalized text
   (words with one space) and encoded as UTF-8. The default is word 5-grams.

Documents with fewer than ``n`` pieces are handled by ``short_documents``: ``"whole"`` (the
default) gives one shingle, the whole normalized text, so short documents still get a
signature and identical short documents are still found as duplicates; ``"drop"`` gives no
shingle. A document whose normalized text is empty always has no shingle; its MinHash
signature is the empty-set signature (all values ``2**32 - 1``), which the clustering code
treats specially (see :mod:`streammix.metadata.clusters`).

:func:`shingles` returns the distinct shingles in order of first occurrence (MinHash only
depends on the set). The signature path never materializes shingles in Python:
:func:`encode_normalized` does steps 1-3 per document and hands UTF-8 bytes to numba kernels
that collapse whitespace (:func:`collapse_whitespace_nb`, same code points as
``str.split()``) and find the same byte windows (:func:`shingle_windows_nb`); tests check
that both paths agree.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

NORMALIZATIONS = ("NFC", "NFD", "NFKC", "NFKD", None)
PUNCTUATION_MODES = ("keep", "remove", "space")
UNITS = ("word", "char")
SHORT_DOCUMENT_MODES = ("whole", "drop")

_SPACE = 0x20


@dataclass(frozen=True, kw_only=True)
class ShingleConfig:
    """How text becomes shingles (see the module docstring for the exact pipeline)."""

    unit: str = "word"
    n: int = 5
    normalization: str | None = "NFKC"
    lowercase: bool = True
    punctuation: str = "space"
    short_documents: str = "whole"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be a positive integer, got {self.n!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        if self.punctuation not in PUNCTUATION_MODES:
            raise ValueError(
                f"punctuation must be one of {PUNCTUATION_MODES}, got {self.punctuation!r}"
            )
        if self.short_documents not in SHORT_DOCUMENT_MODES:
            raise ValueError(
                f"short_documents must be one of {SHORT_DOCUMENT_MODES}, "
                f"got {self.short_documents!r}"
            )


@functools.lru_cache(maxsize=2)
def _punctuation_table(replacement: str | None) -> dict[int, str | None]:
    """``str.translate`` table mapping every Unicode punctuation code point (category P*)."""
    return {
        cp: replacement
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)).startswith("P")
    }


def _normalize_characters(text: str, config: ShingleConfig) -> str:
    """Steps 1-3 of the module docstring (everything but whitespace)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if config.normalization is not None:
        text = unicodedata.normalize(config.normalization, text)
    if config.lowercase:
        text = text.lower()
    if config.punctuation != "keep":
        text = text.translate(_punctuation_table(None if config.punctuation == "remove" else " "))
    return text


def normalize_text(text: str, config: ShingleConfig) -> str:
    """Steps 1-4 of the module docstring: the normalized text the shingles are cut from."""
    return " ".join(_normalize_characters(text, config).split())


def shingles(text: str, config: ShingleConfig) -> list[bytes]:
    """The distinct shingles of ``text`` (UTF-8 bytes) in order of first occurrence."""
    normalized = normalize_text(text, config)
    if not normalized:
        return []
    pieces = normalized.split(" ") if config.unit == "word" else list(normalized)
    glue = " " if config.unit == "word" else ""
    n = config.n
    if len(pieces) < n:
        return (
            [normalized.encode("utf-8", "surrogatepass")]
            if config.short_documents == "whole"
            else []
        )
    grams = (
        glue.join(pieces[i : i + n]).encode("utf-8", "surrogatepass")
        for i in range(len(pieces) - n + 1)
    )
    return list(dict.fromkeys(grams))


def encode_normalized(
    texts: Sequence[str], config: ShingleConfig, *, collapse_whitespace: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texts as one writable UTF-8 buffer: ``(buffer uint8, starts int64, lengths int64)``.

    With ``collapse_whitespace=False`` step 4 is left to :func:`collapse_whitespace_nb`
    inside a kernel (saves a Python split and join per document).
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of str, not a single str")
    prepare = normalize_text if collapse_whitespace else _normalize_characters
    encoded = [prepare(t, config).encode("utf-8", "surrogatepass") for t in texts]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    starts = np.zeros(len(encoded), dtype=np.int64)
    if len(encoded) > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    return np.frombuffer(bytearray(b"".join(encoded)), dtype=np.uint8), starts, lengths


# Every code point ``str.split()`` splits on (``chr(cp).isspace()``; a test checks the list).
WHITESPACE_CODE_POINTS = np.array(
    [*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B)]
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000],
    dtype=np.int64,
)


@numba.njit(cache=True, inline="always")
def _code_point_at(buf: np.ndarray, p: np.int64, stop: np.int64) -> tuple[np.int64, np.int64]:
    """``(code point, byte length)`` of the UTF-8 sequence at ``p`` (lenient on bad input)."""
    lead = np.int64(buf[p])
    if lead < 0x80:
        return lead, 1
    size = 2 if lead < 0xE0 else (3 if lead < 0xF0 else 4)
    value = lead & (0x3F >> (size - 1))
    for q in range(p + 1, min(p + size, stop)):
        value = (value << 6) | (np.int64(buf[q]) & 0x3F)
    return value, size


@numba.njit(cache=True)
def collapse_whitespace_nb(buf, start, length, whitespace) -> np.int64:
    """Step 4 in place on ``buf[start:start+length]``; returns the new length.

    Runs of the code points in ``whitespace`` (sorted) become one space; leading and trailing
    whitespace is dropped, exactly like ``" ".join(text.split())``.
    """
    write = start
    pending_space = False
    p = start
    stop = start + length
    while p < stop:
        cp, size = _code_point_at(buf, p, stop)
        is_space = False
        if cp < 0x80:
            is_space = cp == 0x20 or 0x09 <= cp <= 0x0D or 0x1C <= cp <= 0x1F
        elif cp >= 0x85:
            k = np.searchsorted(whitespace, cp)
            is_space = k < whitespace.shape[0] and whitespace[k] == cp
        if is_space:
            pending_space = write > start
        else:
            if pending_space:
                buf[write] = _SPACE
                write += 1
                pending_space = False
            for q in range(p, min(p + size, stop)):
                buf[write] = buf[q]
                write += 1
        p += size
    return write - start


@numba.njit(cache=True)
def shingle_windows_nb(
    buf: np.ndarray,
    start: np.int64,
    length: np.int64,
    char_unit: bool,
    n: np.int64,
    keep_short: bool,
    win_start: np.ndarray,
    win_end: np.ndarray,
) -> np.int64:
    """Byte windows ``[win_start[i], win_end[i])`` of the shingles of one normalized text.

    ``win_start``/``win_end`` need room for ``length + 1`` entries; returns the number of
    windows (shingles, possibly repeated). Pieces are found first and stored in the same
    arrays (piece ``i`` spans ``[win_start[i], win_end[i])``), then overwritten in place by
    the windows, which is safe because window ``i`` only reads pieces ``i`` and ``i + n - 1``.
    """
    count = 0
    if char_unit:
        for p in range(start, start + length):
            if (buf[p] & 0xC0) != 0x80:
                if count > 0:
                    win_end[count - 1] = p
                win_start[count] = p
                count += 1
        if count > 0:
            win_end[count - 1] = start + length
    else:
        p = start
        stop = start + length
        while p < stop:
            q = p
            while q < stop and buf[q] != _SPACE:
                q += 1
            win_start[count] = p
            win_end[count] = q
            count += 1
            p = q + 1
    if count == 0:
        return 0
    if count < n:
        if keep_short:
            win_start[0] = start
            win_end[0] = start + length
            return 1
        return 0
    num_windows = count - n + 1
    for i in range(num_windows):
        win_end[i] = win_end[i + n - 1]
    return num_windows
