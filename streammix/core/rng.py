"""Counter-based randomness: every random choice in streammix is a pure hash of integer keys.

streammix never draws from a stateful or global generator. A random decision is the
SplitMix64 finalizer applied to a key derived from ``(seed, purpose, indices...)``:

    key(seed, k1, ..., kn) = mix(... mix(mix(seed) ^ k1) ... ^ kn)
    mix(x)                 = SplitMix64 finalizer of x + golden gamma   (a bijection on 2^64)

Because the output depends only on the keys, the same decision is made on every rank, in
every DataLoader worker and after every restart, and any element can be computed without
computing the ones before it. The functions exist twice: plain Python (the readable
reference, also used outside kernels) and numba ``njit`` versions for kernels; a test checks
that both agree bit for bit.

Random permutations of ``[0, n)`` are built from a keyed Feistel network on ``2*h`` bits
(``4**h >= n``) with cycle walking, so ``permute_index(i, n, key)`` is a bijection of
``[0, n)`` computed in O(1) memory and expected O(1) time per element.
"""

from __future__ import annotations

import numba
import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
FEISTEL_ROUNDS = 4

# Purposes keep the key spaces of unrelated decisions apart.
PURPOSE_PASS = 1
PURPOSE_SHARD_ORDER = 2
PURPOSE_WINDOW = 3
PURPOSE_INTERLEAVE = 4
PURPOSE_ROUNDING = 5
PURPOSE_SPLIT = 6
PURPOSE_TOPICS = 7
PURPOSE_GROUP_SHARD_ORDER = 8
PURPOSE_GROUP_WINDOW = 9
PURPOSE_RESAMPLE = 10  # the extra-copy subset of a pass redrawn per pass ('balanced')
PURPOSE_EPOCH_RESAMPLE = 11  # the same, per epoch of a domain with one-pass epochs (C > 1)


def mix64(x: int) -> int:
    """SplitMix64 output function of ``x``: a bijection on 64-bit integers (reference)."""
    z = (x + GOLDEN_GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix64_array(x: np.ndarray) -> np.ndarray:
    """:func:`mix64` of every element of a ``uint64`` array (vectorized, wrapping)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(GOLDEN_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def derive_key(seed: int, *parts: int) -> int:
    """Fold integer parts into a 64-bit key (reference). Negative seeds are rejected."""
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    key = mix64(seed & MASK64)
    for part in parts:
        key = mix64(key ^ (int(part) & MASK64))
    return key


def uniform01(key: int) -> float:
    """A float in [0, 1) from the top 53 bits of ``mix64(key)`` (reference)."""
    return (mix64(key) >> 11) * (1.0 / (1 << 53))


def permute_index_reference(index: int, size: int, key: int) -> int:
    """Image of ``index`` under the keyed pseudorandom permutation of ``[0, size)``."""
    if not 0 <= index < size:
        raise IndexError(f"index {index} outside [0, {size})")
    half_bits = max(1, ((size - 1).bit_length() + 1) // 2)
    half_mask = (1 << half_bits) - 1
    x = index
    while True:
        left, right = x >> half_bits, x & half_mask
        for round_ in range(FEISTEL_ROUNDS):
            f = mix64(key ^ ((round_ << 32) | right)) & half_mask
            left, right = right, left ^ f
        x = (left << half_bits) | right
        if x < size:
            return x


# ----------------------------------------------------------------------------- numba

_U_GOLDEN = np.uint64(GOLDEN_GAMMA)
_U_M1 = np.uint64(0xBF58476D1CE4E5B9)
_U_M2 = np.uint64(0x94D049BB133111EB)
_U30 = np.uint64(30)
_U27 = np.uint64(27)
_U31 = np.uint64(31)
_U11 = np.uint64(11)
_U32 = np.uint64(32)
_INV53 = 1.0 / float(1 << 53)


@numba.njit(cache=True, inline="always")
def mix64_nb(x: np.uint64) -> np.uint64:
    z = np.uint64(x) + _U_GOLDEN
    z = (z ^ (z >> _U30)) * _U_M1
    z = (z ^ (z >> _U27)) * _U_M2
    return z ^ (z >> _U31)


@numba.njit(cache=True, inline="always")
def fold_nb(key: np.uint64, part: np.int64) -> np.uint64:
    """``mix64(key ^ part)``: one step of :func:`derive_key` inside a kernel."""
    return mix64_nb(np.uint64(key) ^ np.uint64(part))


@numba.njit(cache=True, inline="always")
def uniform01_nb(key: np.uint64) -> float:
    return float(mix64_nb(key) >> _U11) * _INV53


@numba.njit(cache=True, nogil=True)
def feistel_half_bits(size: np.int64) -> np.int64:
    bits = 0
    m = size - 1
    while m > 0:
        bits += 1
        m >>= 1
    half = (bits + 1) // 2
    return max(1, half)


@numba.njit(cache=True, nogil=True)
def permute_index_nb(
    index: np.int64, size: np.int64, key: np.uint64, half_bits: np.int64
) -> np.int64:
    """Kernel version of :func:`permute_index_reference`; ``half_bits`` from ``feistel_half_bits``."""
    hb = np.uint64(half_bits)
    half_mask = (np.uint64(1) << hb) - np.uint64(1)
    x = np.uint64(index)
    usize = np.uint64(size)
    while True:
        left = x >> hb
        right = x & half_mask
        for round_ in range(FEISTEL_ROUNDS):
            f = mix64_nb(np.uint64(key) ^ ((np.uint64(round_) << _U32) | right)) & half_mask
            left, right = right, left ^ f
        x = (left << hb) | right
        if x < usize:
            return np.int64(x)
