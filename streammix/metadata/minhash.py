"""MinHash signatures, bit-identical to ``datasketch.MinHash`` for its 32-bit schemes.

A signature row holds, for each of ``num_perm`` permutations ``pi_k``, the minimum of
``pi_k(h(s))`` over the shingles ``s`` of a document (``2**32 - 1`` for an empty set).

``affine32`` (datasketch 2.x default)
    ``h = sha1_32(s)``, premixed by the 32-bit MurmurHash3 finalizer ``fmix32``, then
    ``pi_k(h) = (a_k * h + b_k) mod 2**32``. ``np.random.RandomState(seed)`` draws all
    ``num_perm`` values ``a' = randint(0, 2**31)`` (``a = 2 a' + 1``, odd) and then all
    ``b = randint(0, 2**32)``, both as ``uint32`` vectors.
``legacy`` (datasketch before 2.0)
    ``pi_k(h) = ((a_k * h + b_k) mod 2**64) mod (2**61 - 1)``, keeping the low 32 bits;
    ``(a_k, b_k)`` are drawn as interleaved ``uint64`` scalars, ``a_k`` from
    ``randint(1, 2**61 - 1)`` and ``b_k`` from ``randint(0, 2**61 - 1)``. datasketch stores
    these values as ``uint64``; they always fit in 32 bits, so streammix stores ``uint32``
    (:func:`to_lean_minhashes` converts back).
``fast`` (streammix only, *not* datasketch-compatible)
    ``h = fast_hash64(s)`` (:mod:`streammix.metadata.hashing`), ``pi_k(h) = (a_k h + b_k) mod
    2**64`` with odd ``a_k``, and the signature keeps the high 32 bits of the minimum, so
    every scheme shares one ``uint32`` layout. ``a_k, b_k`` come from
    :func:`streammix.core.rng.derive_key`. No Python work per shingle.

Hashing, permutation and minimum run in one numba kernel, parallel over blocks of documents
(each thread writes only its own rows, so results never depend on threads). SHA-1 runs inside
the kernel too, 16 shingles side by side. :func:`signatures_from_texts` is the normal path:
Python does one call per document (Unicode normalization, lowercasing, punctuation, UTF-8
encoding); whitespace collapsing, shingle windows, hashing and minima happen in the kernel,
with no Python object per shingle. :func:`signatures_from_shingles` must first walk the
Python lists (about 100 ns per shingle). :func:`signatures_reference` is the slow, obvious
oracle used by the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from streammix.core.rng import derive_key
from streammix.metadata.hashing import (
    SHA1_LANES,
    fast_hash64_nb,
    fast_hash64_reference,
    flatten_messages,
    sha1_32_lanes_nb,
    sha1_32_reference,
    sha1_workspace_nb,
)
from streammix.metadata.shingle import (
    WHITESPACE_CODE_POINTS,
    ShingleConfig,
    collapse_whitespace_nb,
    encode_normalized,
    shingle_windows_nb,
    shingles,
)

SCHEMES = ("affine32", "legacy", "fast")
DATASKETCH_SCHEMES = ("affine32", "legacy")
EMPTY_VALUE = np.uint32(0xFFFFFFFF)
MERSENNE_PRIME_61 = (1 << 61) - 1
_PURPOSE_FAST_PERMUTATION = 0x4D696E48617368  # keeps fast-scheme keys apart from others
_AFFINE32, _LEGACY, _FAST = 0, 1, 2
_SCHEME_CODE = {"affine32": _AFFINE32, "legacy": _LEGACY, "fast": _FAST}
_DOC_BLOCK = 64  # documents per parallel task (amortizes scratch allocation)
_EMPTY64 = np.uint64(0xFFFFFFFF)

_M32 = np.uint64(0xFFFFFFFF)
_P61 = np.uint64(MERSENNE_PRIME_61)
_U13 = np.uint64(13)
_U16 = np.uint64(16)
_U32 = np.uint64(32)
_U61 = np.uint64(61)
_FMIX_C1 = np.uint64(0x85EBCA6B)
_FMIX_C2 = np.uint64(0xC2B2AE35)


def _check_params(num_perm: int, seed: int, scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if isinstance(num_perm, bool) or not isinstance(num_perm, (int, np.integer)) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive integer, got {num_perm!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")


def permutation_params(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """The permutation coefficients ``(a, b)`` as ``uint64`` vectors (see module docstring)."""
    _check_params(num_perm, seed, scheme)
    if scheme == "fast":
        a = [derive_key(int(seed), _PURPOSE_FAST_PERMUTATION, k, 0) | 1 for k in range(num_perm)]
        b = [derive_key(int(seed), _PURPOSE_FAST_PERMUTATION, k, 1) for k in range(num_perm)]
        return np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)
    gen = np.random.RandomState(int(seed))
    if scheme == "legacy":
        pairs = [
            (
                gen.randint(1, MERSENNE_PRIME_61, dtype=np.uint64),
                gen.randint(0, MERSENNE_PRIME_61, dtype=np.uint64),
            )
            for _ in range(num_perm)
        ]
        coefficients = np.array(pairs, dtype=np.uint64)
        return coefficients[:, 0].copy(), coefficients[:, 1].copy()
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32).astype(np.uint64) * 2 + 1
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32).astype(np.uint64)
    return a, b


def fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finalizer (reference)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def signatures_reference(
    shingle_sets: Sequence[Sequence[bytes]],
    num_perm: int = 128,
    seed: int = 1,
    scheme: str = "affine32",
) -> np.ndarray:
    """Slow, obvious MinHash in plain Python integers: the test oracle."""
    a, b = (list(map(int, v)) for v in permutation_params(num_perm, seed, scheme))
    out = np.full((len(shingle_sets), num_perm), EMPTY_VALUE, dtype=np.uint32)
    for row, doc in enumerate(shingle_sets):
        for s in doc:
            if scheme == "affine32":
                h = fmix32(sha1_32_reference(s))
                values = [(ak * h + bk) % 2**32 for ak, bk in zip(a, b)]
            elif scheme == "legacy":
                h = sha1_32_reference(s)
                values = [
                    ((ak * h + bk) % 2**64) % MERSENNE_PRIME_61 % 2**32 for ak, bk in zip(a, b)
                ]
            else:
                h = fast_hash64_reference(s)
                values = [((ak * h + bk) % 2**64) >> 32 for ak, bk in zip(a, b)]
            out[row] = np.minimum(out[row], np.array(values, dtype=np.uint32))
    return out


@numba.njit(cache=True, inline="always")
def _fmix32_nb(h: np.uint64) -> np.uint64:
    h = h ^ (h >> _U16)
    h = (h * _FMIX_C1) & _M32
    h = h ^ (h >> _U13)
    h = (h * _FMIX_C2) & _M32
    return h ^ (h >> _U16)


@numba.njit(cache=True, inline="always")
def _mod_p61(x: np.uint64) -> np.uint64:
    """``x % (2**61 - 1)`` without a division: ``2**61 = 1`` modulo the Mersenne prime."""
    y = (x & _P61) + (x >> _U61)
    return y - _P61 if y >= _P61 else y


@numba.njit(cache=True)
def _hash_group(buf, starts, lengths, count, scheme, workspace, hashes) -> None:
    if scheme == _FAST:
        for j in range(count):
            hashes[j] = fast_hash64_nb(buf, starts[j], lengths[j])
    else:
        sha1_32_lanes_nb(buf, starts, lengths, count, workspace, hashes)


@numba.njit(cache=True)
def _fold_group(hashes, count, scheme, a, b, acc) -> None:
    """Fold the permuted values of ``count`` shingle hashes into the running minima ``acc``."""
    for j in range(count):
        if scheme == _AFFINE32:
            h = _fmix32_nb(hashes[j])
            for k in range(a.shape[0]):
                acc[k] = min(acc[k], (a[k] * h + b[k]) & _M32)
        elif scheme == _LEGACY:
            h = hashes[j]
            for k in range(a.shape[0]):
                acc[k] = min(acc[k], _mod_p61(a[k] * h + b[k]) & _M32)
        else:
            h = hashes[j]
            for k in range(a.shape[0]):
                acc[k] = min(acc[k], (a[k] * h + b[k]) >> _U32)


@numba.njit(cache=True)
def _hash_all(buf, starts, lengths, scheme, workspace, hashes) -> None:
    """Hash every message, ``SHA1_LANES`` at a time (across document boundaries)."""
    for lo in range(0, starts.shape[0], SHA1_LANES):
        hi = min(lo + SHA1_LANES, starts.shape[0])
        _hash_group(buf, starts[lo:hi], lengths[lo:hi], hi - lo, scheme, workspace, hashes[lo:hi])


@numba.njit(cache=True)
def _fold_documents(hashes, doc_offsets, first, stop, scheme, a, b, acc, out) -> None:
    """Signature rows ``first..stop-1`` from their shingle hashes (``doc_offsets`` local)."""
    for d in range(first, stop):
        acc[:] = _EMPTY64
        lo, hi = doc_offsets[d - first], doc_offsets[d - first + 1]
        _fold_group(hashes[lo:hi], hi - lo, scheme, a, b, acc)
        for k in range(acc.shape[0]):
            out[d, k] = acc[k]


@numba.njit(cache=True, parallel=True)
def _signatures_from_flat(buf, starts, lengths, doc_offsets, scheme, a, b, out) -> None:
    num_docs = out.shape[0]
    for block in numba.prange((num_docs + _DOC_BLOCK - 1) // _DOC_BLOCK):
        first, stop = block * _DOC_BLOCK, min((block + 1) * _DOC_BLOCK, num_docs)
        lo, hi = doc_offsets[first], doc_offsets[stop]
        hashes = np.empty(hi - lo, dtype=np.uint64)
        _hash_all(buf, starts[lo:hi], lengths[lo:hi], scheme, sha1_workspace_nb(), hashes)
        acc = np.empty(a.shape[0], dtype=np.uint64)
        local_offsets = doc_offsets[first : stop + 1] - lo
        _fold_documents(hashes, local_offsets, first, stop, scheme, a, b, acc, out)


@numba.njit(cache=True)
def _block_windows(buf, starts, lengths, first, stop, whitespace, char_unit, n, keep_short):
    """Shingle windows of documents ``first..stop-1``: ``(starts, lengths, local offsets)``."""
    room = 0
    for d in range(first, stop):
        room += lengths[d] + 1
    win_start = np.empty(room, dtype=np.int64)
    win_len = np.empty(room, dtype=np.int64)
    offsets = np.zeros(stop - first + 1, dtype=np.int64)
    used = 0
    for d in range(first, stop):
        length = collapse_whitespace_nb(buf, starts[d], lengths[d], whitespace)
        count = shingle_windows_nb(
            buf, starts[d], length, char_unit, n, keep_short, win_start[used:], win_len[used:]
        )
        for w in range(used, used + count):
            win_len[w] -= win_start[w]
        used += count
        offsets[d - first + 1] = used
    return win_start[:used], win_len[:used], offsets


@numba.njit(cache=True, parallel=True)
def _signatures_from_normalized(
    buf, starts, lengths, whitespace, char_unit, n, keep_short, scheme, a, b, out
):
    num_docs = out.shape[0]
    for block in numba.prange((num_docs + _DOC_BLOCK - 1) // _DOC_BLOCK):
        first, stop = block * _DOC_BLOCK, min((block + 1) * _DOC_BLOCK, num_docs)
        win_start, win_len, offsets = _block_windows(
            buf, starts, lengths, first, stop, whitespace, char_unit, n, keep_short
        )
        hashes = np.empty(win_start.shape[0], dtype=np.uint64)
        _hash_all(buf, win_start, win_len, scheme, sha1_workspace_nb(), hashes)
        acc = np.empty(a.shape[0], dtype=np.uint64)
        _fold_documents(hashes, offsets, first, stop, scheme, a, b, acc, out)


def _flatten_shingle_sets(shingle_sets: Sequence[Sequence[bytes]]):
    if isinstance(shingle_sets, (bytes, str)):
        raise TypeError("shingle_sets must be a sequence of sequences of bytes")
    counts = []
    for i, doc in enumerate(shingle_sets):
        if isinstance(doc, (bytes, bytearray, str)):
            raise TypeError(
                f"shingle_sets[{i}] is a {type(doc).__name__}; expected a list of bytes shingles"
            )
        counts.append(len(doc))
    flat = [s for doc in shingle_sets for s in doc]
    try:
        buf, starts, lengths = flatten_messages(flat)
    except TypeError as err:
        raise TypeError(f"every shingle must be bytes: {err}") from None
    doc_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=doc_offsets[1:])
    return buf, starts, lengths, doc_offsets


def signatures_from_shingles(
    shingle_sets: Sequence[Sequence[bytes]],
    num_perm: int = 128,
    seed: int = 1,
    scheme: str = "affine32",
) -> np.ndarray:
    """MinHash signatures ``(N, num_perm)`` ``uint32`` of lists of ``bytes`` shingles.

    For ``affine32`` and ``legacy``, row ``i`` equals
    ``datasketch.MinHash(num_perm, seed, scheme=scheme)`` updated with ``shingle_sets[i]``
    (``.hashvalues``), element for element.
    """
    a, b = permutation_params(num_perm, seed, scheme)
    buf, starts, lengths, doc_offsets = _flatten_shingle_sets(shingle_sets)
    out = np.full((len(doc_offsets) - 1, num_perm), EMPTY_VALUE, dtype=np.uint32)
    _signatures_from_flat(buf, starts, lengths, doc_offsets, _SCHEME_CODE[scheme], a, b, out)
    return out


def signatures_from_texts(
    texts: Sequence[str],
    *,
    shingle_config: ShingleConfig,
    num_perm: int = 128,
    seed: int = 1,
    scheme: str = "affine32",
) -> np.ndarray:
    """Signatures of raw texts shingled by ``shingle_config``; equal to
    ``signatures_from_shingles([shingles(t, shingle_config) for t in texts], ...)``."""
    if not isinstance(shingle_config, ShingleConfig):
        raise TypeError(
            f"shingle_config must be a ShingleConfig, got {type(shingle_config).__name__}"
        )
    a, b = permutation_params(num_perm, seed, scheme)
    buf, starts, lengths = encode_normalized(texts, shingle_config, collapse_whitespace=False)
    out = np.full((len(starts), num_perm), EMPTY_VALUE, dtype=np.uint32)
    _signatures_from_normalized(
        buf,
        starts,
        lengths,
        WHITESPACE_CODE_POINTS,
        shingle_config.unit == "char",
        shingle_config.n,
        shingle_config.short_documents == "whole",
        _SCHEME_CODE[scheme],
        a,
        b,
        out,
    )
    return out


def signatures_from_texts_reference(
    texts: Sequence[str],
    *,
    shingle_config: ShingleConfig,
    num_perm: int = 128,
    seed: int = 1,
    scheme: str = "affine32",
) -> np.ndarray:
    """Oracle for :func:`signatures_from_texts`: Python shingles + :func:`signatures_reference`."""
    sets = [shingles(t, shingle_config) for t in texts]
    return signatures_reference(sets, num_perm=num_perm, seed=seed, scheme=scheme)


def is_empty_signature(signatures: np.ndarray) -> np.ndarray:
    """Boolean mask of rows that are the empty-set signature (every value ``2**32 - 1``)."""
    return np.all(np.asarray(signatures) == EMPTY_VALUE, axis=1)


def to_lean_minhashes(signatures: np.ndarray, *, seed: int = 1, scheme: str = "affine32") -> list:
    """Rows as ``datasketch.LeanMinHash`` objects (for the datasketch-compatible schemes)."""
    if scheme not in DATASKETCH_SCHEMES:
        raise ValueError(
            f"only the datasketch-compatible schemes {DATASKETCH_SCHEMES} can become LeanMinHash, "
            f"got {scheme!r}"
        )
    signatures = np.asarray(signatures)
    if signatures.ndim != 2 or signatures.dtype != np.uint32:
        raise ValueError(
            f"signatures must be a 2-D uint32 array, got {signatures.dtype} {signatures.shape}"
        )
    _check_params(signatures.shape[1] or 1, seed, scheme)
    from datasketch import LeanMinHash  # lazy: datasketch is only needed for interop

    dtype = np.uint64 if scheme == "legacy" else np.uint32
    return [
        LeanMinHash(seed=int(seed), hashvalues=row.astype(dtype), scheme=scheme)
        for row in signatures
    ]
