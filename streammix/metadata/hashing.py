"""Shingle hash functions, as numba kernels over a flat byte buffer and as Python references.

MinHash needs one integer per shingle. Two functions are provided:

* ``sha1_32``: the first four bytes of the SHA-1 digest read as a little-endian integer. This
  is the default hash of ``datasketch.MinHash`` for its 32-bit schemes, so signatures built on
  it match datasketch bit for bit. SHA-1 (FIPS 180-4) is implemented here as a numba kernel
  so that hashing needs no Python call per shingle and runs in parallel over documents; the
  reference is :mod:`hashlib`. A message of ``L`` bytes is padded with ``0x80``, zeros and its
  bit length as a big-endian 64-bit integer to a multiple of 64 bytes; each 64-byte block is
  expanded to 80 words and mixed by 80 rounds into the five-word state. The digest's first
  four bytes are the big-endian bytes of the first state word, so the little-endian reading
  is that word byte-swapped. :func:`sha1_32_lanes_nb` hashes 32 single-block messages
  (<= 55 bytes, nearly every shingle) at once, one message per SIMD lane.
* ``fast_hash64``: a 64-bit non-cryptographic hash for streammix's own ``fast`` scheme (not
  datasketch-compatible). The state starts as ``length * K2``; every 8-byte little-endian
  word ``w`` of the message (the last one zero-padded) updates it to
  ``rotl64(state ^ (w * K1), 29) * K2`` (both odd constants, so each step is a bijection of
  the state and of the word, with one multiply on the dependency chain), and the result is
  ``mix64(state)``, where ``mix64`` is the SplitMix64 finalizer of :mod:`streammix.core.rng`.

Messages are addressed as ``(start, length)`` in a ``uint8`` buffer. Scalar code computes in
``uint64`` with explicit masks, because numba widens 32-bit integer arithmetic.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np

from streammix.core.rng import MASK64, mix64, mix64_nb

_M32 = np.uint64(0xFFFFFFFF)
_U8 = np.uint64(8)
_U16 = np.uint64(16)
_U24 = np.uint64(24)
_U32 = np.uint64(32)
_U56 = np.uint64(56)
FAST_K1 = 0x9E3779B97F4A7C15
FAST_K2 = 0xBF58476D1CE4E5B9
_FAST_K1 = np.uint64(FAST_K1)
_FAST_K2 = np.uint64(FAST_K2)
_U29 = np.uint64(29)
_U35 = np.uint64(35)
_SHA1_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)
_SHA1_K = (0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6)


def sha1_32_reference(data: bytes) -> int:
    """First four bytes of SHA-1 of ``data`` as a little-endian integer (datasketch's default)."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


def fast_hash64_reference(data: bytes) -> int:
    """The ``fast`` scheme's 64-bit shingle hash, in plain Python."""
    state = (len(data) * FAST_K2) & MASK64
    for pos in range(0, len(data), 8):
        word = int.from_bytes(data[pos : pos + 8].ljust(8, b"\0"), "little")
        state ^= (word * FAST_K1) & MASK64
        state = (((state << 29) | (state >> 35)) & MASK64) * FAST_K2 & MASK64
    return mix64(state)


@numba.njit(cache=True, inline="always")
def _rotl32(x: np.uint64, n: np.uint64) -> np.uint64:
    return ((x << n) | (x >> (_U32 - n))) & _M32


@numba.njit(cache=True, inline="always")
def _padded_byte(buf: np.ndarray, start: np.int64, length: np.int64, pos: np.int64) -> np.uint64:
    """Byte ``pos`` of the SHA-1 padded message (the bit-length field is written separately)."""
    if pos < length:
        return np.uint64(buf[start + pos])
    if pos == length:
        return np.uint64(0x80)
    return np.uint64(0)


@numba.njit(cache=True)
def _sha1_block(buf, start, length, block, num_blocks, schedule, state) -> None:
    base = block * 64
    for i in range(16):
        p = base + 4 * i
        schedule[i] = (
            (_padded_byte(buf, start, length, p) << _U24)
            | (_padded_byte(buf, start, length, p + 1) << _U16)
            | (_padded_byte(buf, start, length, p + 2) << _U8)
            | _padded_byte(buf, start, length, p + 3)
        )
    if block == num_blocks - 1:
        bit_length = np.uint64(length) * _U8
        schedule[14] = bit_length >> _U32
        schedule[15] = bit_length & _M32
    for i in range(16, 80):
        x = schedule[i - 3] ^ schedule[i - 8] ^ schedule[i - 14] ^ schedule[i - 16]
        schedule[i] = _rotl32(x, np.uint64(1))
    a, b, c, d, e = state[0], state[1], state[2], state[3], state[4]
    for i in range(80):
        if i < 20:
            f = (b & c) | ((~b & _M32) & d)
            k = np.uint64(_SHA1_K[0])
        elif i < 40:
            f = b ^ c ^ d
            k = np.uint64(_SHA1_K[1])
        elif i < 60:
            f = (b & c) | (b & d) | (c & d)
            k = np.uint64(_SHA1_K[2])
        else:
            f = b ^ c ^ d
            k = np.uint64(_SHA1_K[3])
        t = (_rotl32(a, np.uint64(5)) + f + e + k + schedule[i]) & _M32
        e = d
        d = c
        c = _rotl32(b, np.uint64(30))
        b = a
        a = t
    state[0] = (state[0] + a) & _M32
    state[1] = (state[1] + b) & _M32
    state[2] = (state[2] + c) & _M32
    state[3] = (state[3] + d) & _M32
    state[4] = (state[4] + e) & _M32


@numba.njit(cache=True)
def sha1_32_nb(
    buf: np.ndarray, start: np.int64, length: np.int64, scratch: np.ndarray
) -> np.uint64:
    """:func:`sha1_32_reference` of ``buf[start:start+length]``.

    ``scratch`` is a ``uint64`` array of at least 85 elements (message schedule and state),
    allocated once per thread by the caller.
    """
    schedule = scratch[:80]
    state = scratch[80:85]
    for i in range(5):
        state[i] = np.uint64(_SHA1_INIT[i])
    num_blocks = (length + 8) // 64 + 1
    for block in range(num_blocks):
        _sha1_block(buf, start, length, block, num_blocks, schedule, state)
    return _bswap32(state[0])


@numba.njit(cache=True, inline="always")
def _load_u64_le(buf: np.ndarray, p: np.int64) -> np.uint64:
    """Eight bytes at ``p`` as a little-endian integer (LLVM folds this into one load)."""
    return (
        np.uint64(buf[p])
        | (np.uint64(buf[p + 1]) << _U8)
        | (np.uint64(buf[p + 2]) << _U16)
        | (np.uint64(buf[p + 3]) << _U24)
        | (np.uint64(buf[p + 4]) << _U32)
        | (np.uint64(buf[p + 5]) << np.uint64(40))
        | (np.uint64(buf[p + 6]) << np.uint64(48))
        | (np.uint64(buf[p + 7]) << _U56)
    )


@numba.njit(cache=True, inline="always")
def _fast_step(state: np.uint64, word: np.uint64) -> np.uint64:
    state = state ^ (word * _FAST_K1)
    return ((state << _U29) | (state >> _U35)) * _FAST_K2


@numba.njit(cache=True)
def fast_hash64_nb(buf: np.ndarray, start: np.int64, length: np.int64) -> np.uint64:
    """:func:`fast_hash64_reference` of ``buf[start:start+length]``."""
    state = np.uint64(length) * _FAST_K2
    full_words = length // 8
    for w in range(full_words):
        state = _fast_step(state, _load_u64_le(buf, start + 8 * w))
    tail = length - 8 * full_words
    if tail > 0:
        word = np.uint64(0)
        base = start + 8 * full_words
        for j in range(tail - 1, -1, -1):
            word = (word << _U8) | np.uint64(buf[base + j])
        state = _fast_step(state, word)
    return mix64_nb(state)


SHA1_LANES = 32
SHA1_SINGLE_BLOCK_MAX = 55  # longest message whose padding fits in one 64-byte block
SHA1_MIN_LANES = 6  # smaller groups are hashed one by one (a full lane pass costs more)
_U32_ = np.uint32


@numba.njit(cache=True)
def sha1_workspace_nb() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scratch arrays for :func:`sha1_32_lanes_nb`, allocated once per thread."""
    block = np.empty((SHA1_LANES, 64), dtype=np.uint8)
    schedule = np.empty((80, SHA1_LANES), dtype=np.uint32)
    state = np.empty((5, SHA1_LANES), dtype=np.uint32)
    scratch = np.empty(85, dtype=np.uint64)
    return block, schedule, state, scratch


# The lane kernels keep every value in uint32 arrays and truncate after each operation
# (numba computes in 64 bits); LLVM narrows this back to 32-bit vector instructions.
@numba.njit(cache=True, inline="always")
def _rotl32_lane(x, n: int) -> np.uint32:
    return _U32_((x << n) | (x >> (32 - n)))


@numba.njit(cache=True, inline="always")
def _load_single_blocks(buf, starts, lengths, count, block, schedule) -> None:
    block[:, :] = 0
    for lane in range(count):
        length = lengths[lane]
        if length > SHA1_SINGLE_BLOCK_MAX:
            continue
        for j in range(length):
            block[lane, j] = buf[starts[lane] + j]
        block[lane, length] = 0x80
        bits = length * 8
        block[lane, 62] = (bits >> 8) & 0xFF
        block[lane, 63] = bits & 0xFF
    for i in range(16):
        for lane in range(SHA1_LANES):
            schedule[i, lane] = _U32_(
                (_U32_(block[lane, 4 * i]) << 24)
                | (_U32_(block[lane, 4 * i + 1]) << 16)
                | (_U32_(block[lane, 4 * i + 2]) << 8)
                | _U32_(block[lane, 4 * i + 3])
            )
    for i in range(16, 80):
        for lane in range(SHA1_LANES):
            x = schedule[i - 3, lane] ^ schedule[i - 8, lane] ^ schedule[i - 14, lane]
            schedule[i, lane] = _rotl32_lane(_U32_(x ^ schedule[i - 16, lane]), 1)


@numba.njit(cache=True, inline="always")
def _rounds_lanes(first, last, k, kind, schedule, a, b, c, d, e) -> None:
    """SHA-1 rounds ``first..last-1`` on every lane; ``kind`` picks the round function."""
    for i in range(first, last):
        if kind == 0:
            for lane in range(SHA1_LANES):
                f = _U32_((b[lane] & c[lane]) | (_U32_(~b[lane]) & d[lane]))
                t = _U32_(_rotl32_lane(a[lane], 5) + f + e[lane] + k + schedule[i, lane])
                e[lane] = d[lane]
                d[lane] = c[lane]
                c[lane] = _rotl32_lane(b[lane], 30)
                b[lane] = a[lane]
                a[lane] = t
        elif kind == 1:
            for lane in range(SHA1_LANES):
                f = _U32_(b[lane] ^ c[lane] ^ d[lane])
                t = _U32_(_rotl32_lane(a[lane], 5) + f + e[lane] + k + schedule[i, lane])
                e[lane] = d[lane]
                d[lane] = c[lane]
                c[lane] = _rotl32_lane(b[lane], 30)
                b[lane] = a[lane]
                a[lane] = t
        else:
            for lane in range(SHA1_LANES):
                f = _U32_((b[lane] & c[lane]) | (b[lane] & d[lane]) | (c[lane] & d[lane]))
                t = _U32_(_rotl32_lane(a[lane], 5) + f + e[lane] + k + schedule[i, lane])
                e[lane] = d[lane]
                d[lane] = c[lane]
                c[lane] = _rotl32_lane(b[lane], 30)
                b[lane] = a[lane]
                a[lane] = t


@numba.njit(cache=True)
def sha1_32_lanes_nb(buf, starts, lengths, count, workspace, out) -> None:
    """``sha1_32`` of up to ``SHA1_LANES`` messages at once, written to ``out[:count]``.

    Single-block messages are hashed side by side, one SIMD lane each (the lane loops
    vectorize); longer ones, and groups too small to fill the lanes, use :func:`sha1_32_nb`.
    """
    block, schedule, state, scratch = workspace
    if count < SHA1_MIN_LANES:
        for j in range(count):
            out[j] = sha1_32_nb(buf, starts[j], lengths[j], scratch)
        return
    _load_single_blocks(buf, starts, lengths, count, block, schedule)
    a, b, c, d, e = state[0], state[1], state[2], state[3], state[4]
    a[:] = _SHA1_INIT[0]
    b[:] = _SHA1_INIT[1]
    c[:] = _SHA1_INIT[2]
    d[:] = _SHA1_INIT[3]
    e[:] = _SHA1_INIT[4]
    _rounds_lanes(0, 20, _U32_(_SHA1_K[0]), 0, schedule, a, b, c, d, e)
    _rounds_lanes(20, 40, _U32_(_SHA1_K[1]), 1, schedule, a, b, c, d, e)
    _rounds_lanes(40, 60, _U32_(_SHA1_K[2]), 2, schedule, a, b, c, d, e)
    _rounds_lanes(60, 80, _U32_(_SHA1_K[3]), 1, schedule, a, b, c, d, e)
    for lane in range(count):
        if lengths[lane] > SHA1_SINGLE_BLOCK_MAX:
            out[lane] = sha1_32_nb(buf, starts[lane], lengths[lane], scratch)
        else:
            out[lane] = _bswap32(np.uint64(_U32_(a[lane] + _U32_(_SHA1_INIT[0]))))


@numba.njit(cache=True, inline="always")
def _bswap32(h: np.uint64) -> np.uint64:
    return (
        ((h & np.uint64(0xFF)) << _U24)
        | (((h >> _U8) & np.uint64(0xFF)) << _U16)
        | (((h >> _U16) & np.uint64(0xFF)) << _U8)
        | (h >> _U24)
    )


@numba.njit(cache=True, parallel=True)
def _sha1_32_many(buf, starts, lengths, out) -> None:
    num_groups = (starts.shape[0] + SHA1_LANES - 1) // SHA1_LANES
    for g in numba.prange(num_groups):
        workspace = sha1_workspace_nb()
        lo = g * SHA1_LANES
        hi = min(lo + SHA1_LANES, starts.shape[0])
        sha1_32_lanes_nb(buf, starts[lo:hi], lengths[lo:hi], hi - lo, workspace, out[lo:hi])


@numba.njit(cache=True, parallel=True)
def _fast_hash64_many(buf, starts, lengths, out) -> None:
    for i in numba.prange(starts.shape[0]):
        out[i] = fast_hash64_nb(buf, starts[i], lengths[i])


def flatten_messages(messages: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate ``messages`` into ``(buffer uint8, starts int64, lengths int64)``."""
    lengths = np.fromiter(map(len, messages), dtype=np.int64, count=len(messages))
    starts = np.zeros(len(messages), dtype=np.int64)
    if len(messages) > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    buffer = np.frombuffer(b"".join(messages), dtype=np.uint8)
    return buffer, starts, lengths


def sha1_32_array(messages: list[bytes]) -> np.ndarray:
    """``sha1_32`` of every message, computed by the numba kernel (``uint32``)."""
    buf, starts, lengths = flatten_messages(messages)
    out = np.empty(len(messages), dtype=np.uint64)
    _sha1_32_many(buf, starts, lengths, out)
    return out.astype(np.uint32)


def fast_hash64_array(messages: list[bytes]) -> np.ndarray:
    """``fast_hash64`` of every message, computed by the numba kernel (``uint64``)."""
    buf, starts, lengths = flatten_messages(messages)
    out = np.empty(len(messages), dtype=np.uint64)
    _fast_hash64_many(buf, starts, lengths, out)
    return out
