"""Near-duplicate clusters from MinHash signatures: LSH banding and union-find.

**Bands and rows.** A signature of ``num_perm`` values is cut into ``b`` bands of ``r`` rows
(``b * r <= num_perm``). Two documents of Jaccard similarity ``s`` share at least one band
with probability ``1 - (1 - s**r)**b``. :func:`lsh_bands_rows` picks ``(b, r)`` for a threshold
``t`` exactly as ``datasketch.MinHashLSH`` does: it minimizes ``w_fp * FP + w_fn * FN`` with
``FP = int_0^t 1 - (1 - s**r)**b ds`` and ``FN = int_t^1 (1 - s**r)**b ds`` over all
``b in [1, num_perm]``, ``r in [1, num_perm // b]``, keeping the first minimum in that order.
The integrands are polynomials of degree ``<= num_perm``; Gauss-Legendre quadrature with
``num_perm // 2 + 1`` nodes integrates them exactly (up to rounding), so no scipy is needed.

**Clusters.** For each band, every document gets a 64-bit key, the SplitMix64 fold of the
band index and the band's ``r`` values (:mod:`streammix.core.rng`). Documents with equal keys
are candidates; the connected components of the candidate graph over all bands are the
clusters, which is exactly what querying every document in a ``datasketch.MinHashLSH`` index
with the same ``(b, r)`` and merging the answers gives. (Two different bands collide in 64
bits with probability about ``N**2 / 2**65`` per band: 3e-6 for 10 million documents.)
Union-find always hangs the larger root below the smaller one, so every root is the smallest
member id of its set: cluster id = smallest member id, and the partition is a function of the
signatures alone, never of the input order or of threads. Clusters are formed over whatever
rows are passed in; the build passes all domains of a build together, so cross-domain
duplicates are found.

Empty documents (the empty-set signature, all ``2**32 - 1``) agree in every band; by default
(``empty_documents="singleton"``) each stays alone, with ``"together"`` they form one cluster.

With ``min_similarity`` set, a candidate joins only if its estimated Jaccard similarity to the
*leader* of its bucket reaches that value (curbs chaining at low thresholds). The leader is the member with the smallest :func:`signature_keys` value
(a hash of the whole signature; ties are identical signatures, broken by id), so the
partition still depends only on the signatures, not on the order of the input.

**Memory.** Bands are processed one at a time and each band's keys are computed in chunks of
``chunk_rows`` rows, so besides the signatures only O(N) memory is used: keys (8 bytes per
document), the sort order (8), parents (8) and flags. For 10 million documents with 128
permutations the ``uint32`` signatures take 10e6 * 128 * 4 B = 4.8 GiB and the clustering
about 10e6 * 33 B = 0.3 GiB, far below 24 GiB. Larger inputs can stay on disk: pass an
``np.memmap`` (only a chunk of rows is read at a time); ``min_similarity`` needs random row
access and is meant for in-memory signatures.

**Topic clusters** (:func:`topic_clusters`) are a different thing: k-medoids in MinHash
space. Near-duplicate clusters find copies (5-gram shingles, Jaccard >= 0.8); topics are
groups of documents that use the same vocabulary, which an LSH pass at any threshold finds
poorly (unigram Jaccard between two documents on one topic is often 0.2-0.4, where banding
either misses most pairs or chains everything). So topics are k-medoids over signatures of
word unigrams (or short shingles), with the estimated Jaccard distance
``d(x, y) = 1 - (equal signature values) / num_perm`` (an unbiased estimate of ``1 - J``):

1. Identical signatures are one point (weight = number of copies); empty documents (the
   empty-set signature) are left out and become singletons.
2. Every distinct signature gets a seeded priority ``mix64(seed key ^ signature hash)`` (a
   bijection of its :func:`signature_keys` value, so a uniform random order that depends
   only on the content and the seed). The ``sample_size`` points of smallest priority are
   the *fitting sample* (``min(distinct, max(k * sample_per_cluster, 2048), 20000)``),
   listed in priority order, which is the canonical order every tie is broken in.
3. k-medoids++ seeding on the sample: the first medoid is the sample's first point, each
   next one is drawn with probability proportional to ``weight * D**2`` (``D`` the
   distance to the nearest medoid chosen so far) from counter-based uniforms
   ``uniform01(derive_key(seed, PURPOSE_TOPICS, step))``; no stateful generator.
4. Alternating k-medoids (Voronoi iteration) on the sample: assign each point to its
   nearest medoid (ties: the medoid earliest in canonical order), then move each medoid to
   the member minimizing the weighted sum of distances to the cluster (candidates: the
   current medoid and the first ``candidates`` members in canonical order, so a big cluster
   costs ``O(candidates * size * num_perm)``); stop when no medoid moves or after
   ``max_iter`` rounds.
5. Outlier medoids are dropped: a medoid that no other sample point is nearest to and
   that has no exact copies (a cluster of one document in the sample) is an isolated
   point, not a topic
   (k-medoids++ seeding favours such far points); ``k`` shrinks by their number, unless
   every cluster is one (tiny inputs).
6. Every document is assigned to its nearest medoid (same tie rule); its cluster id is the
   smallest row index among the rows whose signature equals the medoid's (a member of the
   cluster), and ``distance`` is its estimated distance to the medoid. A document that
   shares no signature value with any medoid (estimated Jaccard 0 to every topic; a real
   document with ``J >= 0.05`` to some medoid is flagged with probability
   ``(1 - J)**num_perm``, 4% at 64 permutations) has **no topic**: ``no_topic`` is set, it is
   its own singleton cluster and ``distance = 1``. Random-character junk, encoded blobs and
   text in a script no topic uses end up here instead of inflating an arbitrary topic
   (the first medoid, since all distances tie at 1). After the build's
   :func:`collapse_unshared_values` most such documents share the out-of-vocabulary value
   instead and gather in one compact topic (next paragraph).

**Unshared vocabulary** (:func:`collapse_unshared_values`, applied by the build before
:func:`topic_clusters`). A signature value that no other document holds at its position
is a word that, as far as MinHash can tell, only this document uses. Such values
are replaced by one reserved value, :data:`UNSHARED_VALUE` (``2**32 - 2``), the same for
every document: the counterpart of the out-of-vocabulary token of a model with a fixed
vocabulary, whose vocabulary here is what the build's documents share. Why: SampleMix
clusters sentence *embeddings*, and an encoder maps text it cannot make sense of (random
characters, encoded blobs, tables of hex digits) to one region, so such documents form a
tight cluster of low diversity. In raw word-set space the opposite happens: every random
token is new, junk shares almost nothing with anything, and it looks maximally spread and
separated, the top of the diversity score. With the collapse, junk (most of its values
unshared: 66-86% on issue 16's injected corpus, against a median of 9% for real documents)
agrees with other such documents on the positions where both are unshared, so it gathers
in a compact topic like the encoder's, while two real documents agree on few extra
positions (both unshared at 1% of the positions at that median). It changes real
documents' topics somewhat (documents with much private vocabulary, such as long modules
full of their own identifiers, drift towards each other); the cost is measured in
``benchmarks/RESULTS.md`` (issue 16). Whether a value is shared depends on the build:
a word that several documents use is unshared at a position unless it is the minimum of
another document there too, so in a large build the shared vocabulary is, roughly, the
words that occur in hundreds of documents or more. A real MinHash value that happens to
equal ``2**32 - 2`` is taken for an unshared one (probability ``2**-32`` per value).

The number of clusters ``k`` defaults to ``round(sqrt(distinct signatures))`` capped at
:data:`DEFAULT_MAX_TOPIC_CLUSTERS` (a sensible size for an inspection- and weighting-level
notion of topic: 1,000 documents give ~32 topics of ~32 documents). Every decision depends
on signature contents and the seed only; row indices break no tie except between identical
signatures, which are interchangeable. So the partition and distances do not depend on the
input order, and the kernels' parallel loops only write per-row results (no reductions),
so neither does the number of threads. The cost is ``O((n + iterations * sample) * k *
num_perm)`` comparisons of ``uint32`` values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from streammix.core.rng import PURPOSE_TOPICS, derive_key, fold_nb, mix64_nb, uniform01

EMPTY_MODES = ("singleton", "together")
_EMPTY_VALUE = np.uint32(0xFFFFFFFF)
_UNSHARED_VALUE = np.uint32(0xFFFFFFFE)
UNSHARED_VALUE = int(_UNSHARED_VALUE)  # a topic-signature value no other document holds


def _validate_threshold(threshold: float, name: str = "threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(threshold).__name__}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {threshold}")
    return float(threshold)


def _lsh_errors(threshold: float, num_perm: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """False-positive and false-negative areas for every ``(b, r)``, in datasketch's order."""
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    bands = np.array([p[0] for p in pairs], dtype=np.float64)[:, None]
    rows = np.array([p[1] for p in pairs], dtype=np.float64)[:, None]
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def integral(lo: float, hi: float, false_positive: bool) -> np.ndarray:
        s = (hi - lo) / 2.0 * nodes + (hi + lo) / 2.0
        miss = (1.0 - s[None, :] ** rows) ** bands
        values = 1.0 - miss if false_positive else miss
        return (values * weights[None, :]).sum(axis=1) * (hi - lo) / 2.0

    return pairs, np.stack([integral(0.0, threshold, True), integral(threshold, 1.0, False)])


def lsh_bands_rows(
    threshold: float,
    num_perm: int,
    *,
    false_positive_weight: float = 0.5,
    false_negative_weight: float = 0.5,
) -> tuple[int, int]:
    """``(bands, rows)`` for a Jaccard ``threshold``, as ``datasketch.MinHashLSH`` derives them."""
    threshold = _validate_threshold(threshold)
    if isinstance(num_perm, bool) or not isinstance(num_perm, (int, np.integer)) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive integer, got {num_perm!r}")
    for name, w in (
        ("false_positive_weight", false_positive_weight),
        ("false_negative_weight", false_negative_weight),
    ):
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {w}")
    pairs, (fp, fn) = _lsh_errors(threshold, int(num_perm))
    error = fp * false_positive_weight + fn * false_negative_weight
    return pairs[int(np.argmin(error))]


@numba.njit(cache=True, parallel=True)
def _band_keys(band_values: np.ndarray, band: np.int64, out: np.ndarray) -> None:
    seed = mix64_nb(np.uint64(band))
    for i in numba.prange(band_values.shape[0]):
        key = seed
        for j in range(band_values.shape[1]):
            key = fold_nb(key, np.int64(band_values[i, j]))
        out[i] = key


@numba.njit(cache=True, inline="always")
def _find(parent: np.ndarray, x: np.int64) -> np.int64:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@numba.njit(cache=True)
def _union(parent: np.ndarray, x: np.int64, y: np.int64) -> None:
    rx = _find(parent, x)
    ry = _find(parent, y)
    if rx < ry:
        parent[ry] = rx
    elif ry < rx:
        parent[rx] = ry


@numba.njit(cache=True)
def _estimated_similarity(signatures: np.ndarray, i: np.int64, j: np.int64) -> float:
    equal = 0
    for k in range(signatures.shape[1]):
        if signatures[i, k] == signatures[j, k]:
            equal += 1
    return equal / signatures.shape[1]


@numba.njit(cache=True)
def _union_buckets(keys, order, active, parent, signatures, min_similarity) -> None:
    """Union every active document with the first active member of its key bucket."""
    leader = -1
    for p in range(order.shape[0]):
        doc = order[p]
        if p > 0 and keys[doc] != keys[order[p - 1]]:
            leader = -1
        if not active[doc]:
            continue
        if leader < 0:
            leader = doc
        elif (
            min_similarity <= 0.0
            or _estimated_similarity(signatures, leader, doc) >= min_similarity
        ):
            _union(parent, leader, doc)


@numba.njit(cache=True)
def _roots(parent: np.ndarray) -> np.ndarray:
    out = np.empty(parent.shape[0], dtype=np.int64)
    for i in range(parent.shape[0]):
        out[i] = _find(parent, i)
    return out


_WHOLE_SIGNATURE_BAND = 0x5349475F4B4559  # band index reserved for whole-signature keys


def signature_keys(signatures, *, chunk_rows: int = 1 << 20) -> np.ndarray:
    """A 64-bit hash of every whole signature row (equal rows, equal keys)."""
    _check_signatures(signatures)
    out = np.empty(signatures.shape[0], dtype=np.uint64)
    for lo in range(0, signatures.shape[0], chunk_rows):
        chunk = np.ascontiguousarray(signatures[lo : lo + chunk_rows])
        _band_keys(chunk, _WHOLE_SIGNATURE_BAND, out[lo : lo + chunk_rows])
    return out


def _check_signatures(signatures) -> None:
    if not hasattr(signatures, "shape") or len(signatures.shape) != 2:
        raise ValueError("signatures must be a 2-D array (documents x permutations)")
    if signatures.dtype != np.uint32:
        raise TypeError(f"signatures must have dtype uint32, got {signatures.dtype}")


def _nonempty_rows(signatures, chunk_rows: int) -> np.ndarray:
    n = signatures.shape[0]
    out = np.empty(n, dtype=np.bool_)
    for lo in range(0, n, chunk_rows):
        out[lo : lo + chunk_rows] = np.any(
            np.asarray(signatures[lo : lo + chunk_rows]) != _EMPTY_VALUE, axis=1
        )
    return out


def band_keys(signatures: np.ndarray, *, bands: int, rows: int) -> np.ndarray:
    """``(N, bands)`` uint64: the LSH key of every band of every signature row.

    The same keys :func:`lsh_components` sorts by (band ``b`` covers columns
    ``b * rows .. (b + 1) * rows``); a distributed engine groups rows by ``(band, key)``
    instead of sorting, and gets the same candidate graph.
    """
    _check_signatures(signatures)
    out = np.empty((bands, signatures.shape[0]), dtype=np.uint64)
    for band in range(bands):
        chunk = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        _band_keys(chunk, band, out[band])
    return out.T.copy()


def nonempty_rows(signatures: np.ndarray) -> np.ndarray:
    """True for every row that is not the empty-set signature (such rows stay singletons)."""
    _check_signatures(signatures)
    return _nonempty_rows(signatures, max(1, signatures.shape[0]))


def lsh_components(
    signatures,
    *,
    bands: int,
    rows: int,
    empty_documents: str = "singleton",
    min_similarity: float = 0.0,
    verify_signatures: np.ndarray | None = None,
    chunk_rows: int = 1 << 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the LSH candidate graph: ``(cluster_id, cluster_size)``.

    With ``verify_signatures`` (other signatures of the same rows), ``min_similarity`` is
    checked on those instead: candidates found by one representation, confirmed by
    another. The bucket leader is then chosen by a hash of both rows.
    """
    _check_signatures(signatures)
    n, num_perm = signatures.shape
    if bands < 1 or rows < 1 or bands * rows > num_perm:
        raise ValueError(
            f"need bands >= 1, rows >= 1 and bands * rows <= {num_perm}, got {bands} x {rows}"
        )
    if empty_documents not in EMPTY_MODES:
        raise ValueError(f"empty_documents must be one of {EMPTY_MODES}, got {empty_documents!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    active = (
        _nonempty_rows(signatures, chunk_rows)
        if empty_documents == "singleton"
        else np.ones(n, dtype=np.bool_)
    )
    verify = min_similarity > 0.0
    full = np.ascontiguousarray(signatures) if verify else np.zeros((1, 1), dtype=np.uint32)
    row_keys = signature_keys(full) if verify else None
    if verify and verify_signatures is not None:
        _check_signatures(verify_signatures)
        if verify_signatures.shape[0] != n:
            raise ValueError(f"verify_signatures must have {n} rows")
        full = np.ascontiguousarray(verify_signatures)
        row_keys = signature_keys(np.hstack([np.asarray(signatures), full]))
    parent = np.arange(n, dtype=np.int64)
    keys = np.empty(n, dtype=np.uint64)
    for band in range(bands):
        for lo in range(0, n, chunk_rows):
            chunk = np.ascontiguousarray(
                signatures[lo : lo + chunk_rows, band * rows : (band + 1) * rows]
            )
            _band_keys(chunk, band, keys[lo : lo + chunk_rows])
        order = np.lexsort((row_keys, keys)) if verify else np.argsort(keys, kind="stable")
        _union_buckets(keys, order, active, parent, full, float(min_similarity))
        del order
    cluster_id = _roots(parent)
    cluster_size = np.bincount(cluster_id, minlength=n).astype(np.int64)[cluster_id]
    return cluster_id, cluster_size


# The build's second near-duplicate pass, over the word-unigram (topic) signatures: documents
# sharing this much of their vocabulary, and this much of their 5-grams, are near-copies
# too (see streammix.pipeline.cluster.vocabulary_duplicates).
VOCABULARY_DUPLICATE_THRESHOLD = 0.8
VOCABULARY_DUPLICATE_MIN_SHINGLE_SIMILARITY = 0.25

# The build's near-duplicate pass weighs a missed pair 4x a false one (see
# :func:`build_bands_rows`).
BUILD_FALSE_POSITIVE_WEIGHT = 0.2
BUILD_FALSE_NEGATIVE_WEIGHT = 0.8


def build_bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` of the build's near-duplicate pass (both engines use this).

    With datasketch's equal weights the optimum puts the S-curve's midpoint *above* the
    threshold: at ``t = 0.8`` and 128 permutations it is 9 bands of 13 rows, which finds a
    pair at the threshold with probability 0.40, at 0.85 with 0.69 and at 0.88 with 0.85,
    so a copy with two words changed in 150 (Jaccard about 0.88 over 5-grams) stays alone
    one time in seven (issue 16's injected near-copies: 5-9% missed). In the build a miss
    is the costlier error: the near-duplicate cluster size divides the diversity score, so
    an undetected copy keeps a unique document's weight, while a false merge only discounts
    two documents that share most of their 5-grams anyway. Weighting misses 4:1 gives 12
    bands of 10 rows at ``t = 0.8``: found with probability 0.74 at 0.8, 0.93 at 0.85, 0.98
    at 0.88, and still only 0.29 at 0.7 and 0.07 at 0.6 (equal weights: 0.08 and 0.01).
    """
    return lsh_bands_rows(
        threshold,
        num_perm,
        false_positive_weight=BUILD_FALSE_POSITIVE_WEIGHT,
        false_negative_weight=BUILD_FALSE_NEGATIVE_WEIGHT,
    )


def duplicate_clusters(
    signatures,
    *,
    threshold: float = 0.8,
    false_positive_weight: float = 0.5,
    false_negative_weight: float = 0.5,
    empty_documents: str = "singleton",
    chunk_rows: int = 1 << 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate clusters: ``(cluster_id int64, cluster_size int64)`` per document.

    ``cluster_id`` is the smallest row index in the cluster. Bands and rows come from
    :func:`lsh_bands_rows` with the given threshold and weights.
    """
    _check_signatures(signatures)
    bands, rows = lsh_bands_rows(
        threshold,
        signatures.shape[1],
        false_positive_weight=false_positive_weight,
        false_negative_weight=false_negative_weight,
    )
    return lsh_components(
        signatures, bands=bands, rows=rows, empty_documents=empty_documents, chunk_rows=chunk_rows
    )


@numba.njit(cache=True)
def _union_with(parent: np.ndarray, cluster_id: np.ndarray) -> None:
    for i in range(cluster_id.shape[0]):
        _union(parent, np.int64(i), np.int64(cluster_id[i]))


def merge_partitions(*cluster_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finest partition coarser than every given one: ``(cluster_id, cluster_size)``.

    Two documents end up together when some chain of documents links them, each link being
    "in one cluster of one of the inputs" (connected components of the union of the
    inputs' graphs). The cluster id is again the smallest member, so the result depends on
    the partitions only, not on their numbering or order.
    """
    if not cluster_ids:
        raise ValueError("merge_partitions needs at least one partition")
    n = np.asarray(cluster_ids[0]).shape[0]
    parent = np.arange(n, dtype=np.int64)
    for ids in cluster_ids:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (n,) or (n and (ids.min() < 0 or ids.max() >= n)):
            raise ValueError(f"every partition must hold {n} row indices")
        _union_with(parent, ids)
    cluster_id = _roots(parent)
    return cluster_id, np.bincount(cluster_id, minlength=n).astype(np.int64)[cluster_id]


def exact_jaccard_components(shingle_sets: list[set[bytes]], threshold: float) -> np.ndarray:
    """Reference: components of the graph ``J(A, B) >= threshold`` by brute force (small N)."""
    n = len(shingle_sets)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for i in range(n):
        for j in range(i + 1, n):
            a, b = shingle_sets[i], shingle_sets[j]
            if a and b and len(a & b) / len(a | b) >= threshold:
                ri, rj = find(i), find(j)
                parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


DEFAULT_MAX_TOPIC_CLUSTERS = 256
MAX_SAMPLE_SIZE = 20_000


@dataclass(frozen=True)
class TopicClusters:
    """Result of :func:`topic_clusters`, one entry per document (row) unless noted."""

    cluster_id: np.ndarray  # int64: smallest row holding the medoid's signature
    cluster_size: np.ndarray  # int64: documents in the cluster
    distance: np.ndarray  # float64: estimated Jaccard distance to the medoid (0 for empty docs)
    medoids: np.ndarray  # int64 [k]: the medoid rows (cluster ids), in canonical order
    empty: np.ndarray  # bool: empty documents, each its own singleton cluster
    no_topic: np.ndarray  # bool: no signature value in common with any medoid (singletons)


def collapse_unshared_values(signatures: np.ndarray) -> np.ndarray:
    """Topic signatures with every *unshared* value replaced by :data:`UNSHARED_VALUE`.

    A value is unshared when no other document of the input holds it at the same position:
    the word that won that permutation is, as far as MinHash can tell, used by this
    document alone. All of them become one value, the MinHash counterpart of an encoder's
    out-of-vocabulary token (see the module docstring, *Unshared vocabulary*). Documents
    are rows: words that copies of a text (or a template, such as a navigation menu) have
    in common are shared. Empty-document rows stay as they are. Row ``i`` of the result
    depends only on row ``i`` and the multiset of rows, not on their order.
    """
    _check_signatures(signatures)
    out = np.array(signatures, dtype=np.uint32, copy=True, order="C")
    live = np.flatnonzero(_nonempty_rows(out, 1 << 20))
    if live.size == 0:
        return out
    for k in range(out.shape[1]):
        column = out[live, k]
        order = np.argsort(column, kind="stable")
        differs = column[order][1:] != column[order][:-1]
        alone = np.r_[True, differs] & np.r_[differs, True]
        out[live[order[alone]], k] = _UNSHARED_VALUE
    return out


def auto_num_clusters(num_points: int, max_clusters: int = DEFAULT_MAX_TOPIC_CLUSTERS) -> int:
    """``round(sqrt(num_points))`` clamped to ``[1, max_clusters]``."""
    return int(min(max(1, round(math.sqrt(max(num_points, 0)))), max_clusters))


@numba.njit(cache=True)
def _priorities(keys: np.ndarray, seed_key: np.uint64) -> np.ndarray:
    out = np.empty(keys.shape[0], dtype=np.uint64)
    for i in range(keys.shape[0]):
        out[i] = mix64_nb(keys[i] ^ seed_key)
    return out


@numba.njit(cache=True)
def _mismatches(signatures: np.ndarray, i: np.int64, other: np.ndarray, j: np.int64) -> np.int64:
    count = 0
    for k in range(signatures.shape[1]):
        if signatures[i, k] != other[j, k]:
            count += 1
    return count


@numba.njit(cache=True, parallel=True)
def _assign_nearest(signatures, rows, medoid_signatures, label, mismatches) -> None:
    """``label[p]``: nearest medoid (first on ties) of ``signatures[rows[p]]``; its mismatches."""
    for p in numba.prange(rows.shape[0]):
        best = signatures.shape[1] + 1
        best_m = -1
        for m in range(medoid_signatures.shape[0]):
            c = _mismatches(signatures, rows[p], medoid_signatures, m)
            if c < best:
                best = c
                best_m = m
        label[p] = best_m
        mismatches[p] = best


@numba.njit(cache=True)
def _seed_medoids(sample_signatures, weights, k, uniforms) -> np.ndarray:
    """k-medoids++ on the sample (rows in canonical order); returns sample positions."""
    s = sample_signatures.shape[0]
    num_perm = sample_signatures.shape[1]
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = 0
    nearest = np.empty(s, dtype=np.int64)
    for p in range(s):
        nearest[p] = _mismatches(sample_signatures, p, sample_signatures, 0)
    for step in range(1, k):
        total = 0.0
        for p in range(s):
            d = nearest[p] / num_perm
            total += weights[p] * d * d
        pick = -1
        if total > 0.0:
            target = uniforms[step] * total
            running = 0.0
            for p in range(s):
                d = nearest[p] / num_perm
                running += weights[p] * d * d
                if running > target and nearest[p] > 0:
                    pick = p
                    break
            if pick < 0:  # rounding at the very end: the last point not yet at distance 0
                for p in range(s - 1, -1, -1):
                    if nearest[p] > 0:
                        pick = p
                        break
        if pick < 0:
            return chosen[:step]
        chosen[step] = pick
        for p in range(s):
            c = _mismatches(sample_signatures, p, sample_signatures, pick)
            if c < nearest[p]:
                nearest[p] = c
    return chosen


@numba.njit(cache=True)
def _update_medoids(sample_signatures, weights, label, medoids, candidates) -> bool:
    """Move each medoid to its best candidate member; True if any medoid moved."""
    k = medoids.shape[0]
    s = sample_signatures.shape[0]
    counts = np.zeros(k + 1, dtype=np.int64)
    for p in range(s):
        counts[label[p] + 1] += 1
    starts = np.cumsum(counts)
    members = np.empty(s, dtype=np.int64)
    fill = starts[:-1].copy()
    for p in range(s):  # members of each cluster in canonical (sample) order
        members[fill[label[p]]] = p
        fill[label[p]] += 1
    moved = False
    for m in range(k):
        lo, hi = starts[m], starts[m + 1]
        best = medoids[m]
        best_cost = 0.0
        for q in range(lo, hi):
            best_cost += weights[members[q]] * _mismatches(
                sample_signatures, best, sample_signatures, members[q]
            )
        for q in range(lo, min(hi, lo + candidates)):
            c = members[q]
            if c == medoids[m]:
                continue
            cost = 0.0
            for r in range(lo, hi):
                cost += weights[members[r]] * _mismatches(
                    sample_signatures, c, sample_signatures, members[r]
                )
                if cost > best_cost:
                    break
            if cost < best_cost or (cost == best_cost and c < best):
                best, best_cost = c, cost
        if best != medoids[m]:
            medoids[m] = best
            moved = True
    return moved


def _check_count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def topic_clusters(
    signatures: np.ndarray,
    *,
    num_clusters: int | None = None,
    seed: int = 0,
    max_iter: int = 20,
    sample_per_cluster: int = 64,
    candidates: int = 256,
) -> TopicClusters:
    """Topic clusters by k-medoids in MinHash space (see the module docstring).

    ``signatures`` should be MinHash signatures of word unigrams or short shingles
    (``ShingleConfig(n=1)``); ``num_clusters`` defaults to :func:`auto_num_clusters` of the
    number of distinct non-empty signatures, and is lowered to that number when larger.
    """
    _check_signatures(signatures)
    if num_clusters is not None:
        num_clusters = _check_count("num_clusters", num_clusters, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    max_iter = _check_count("max_iter", max_iter, 0)
    sample_per_cluster = _check_count("sample_per_cluster", sample_per_cluster, 1)
    candidates = _check_count("candidates", candidates, 1)
    signatures = np.ascontiguousarray(signatures)
    n, num_perm = signatures.shape
    empty = ~_nonempty_rows(signatures, 1 << 20)
    rows = np.arange(n, dtype=np.int64)
    cluster_id = rows.copy()
    distance = np.zeros(n, dtype=np.float64)
    live = np.flatnonzero(~empty)
    if live.size == 0:
        return TopicClusters(
            cluster_id, np.ones(n, np.int64), distance, np.zeros(0, np.int64), empty, empty & False
        )
    keys = signature_keys(signatures[live])
    # distinct signatures (equal 64-bit keys), each represented by its smallest row
    by_key = np.lexsort((live, keys))
    first = np.r_[True, keys[by_key][1:] != keys[by_key][:-1]]
    group_start = np.flatnonzero(first)
    distinct_rows = live[by_key[group_start]]
    weights = np.diff(np.r_[group_start, by_key.size]).astype(np.float64)
    priority = _priorities(
        keys[by_key[group_start]], np.uint64(derive_key(int(seed), PURPOSE_TOPICS))
    )
    canonical = np.argsort(priority, kind="stable")
    num_distinct = distinct_rows.size
    k = auto_num_clusters(num_distinct) if num_clusters is None else num_clusters
    k = min(k, num_distinct)
    size = min(num_distinct, max(k * sample_per_cluster, 2048), max(MAX_SAMPLE_SIZE, k))
    sample = canonical[:size]
    sample_signatures = np.ascontiguousarray(signatures[distinct_rows[sample]])
    sample_weights = weights[sample]
    uniforms = np.array(
        [uniform01(derive_key(int(seed), PURPOSE_TOPICS, step)) for step in range(k)],
        dtype=np.float64,
    )
    medoids = np.sort(_seed_medoids(sample_signatures, sample_weights, k, uniforms))
    label = np.empty(size, dtype=np.int64)
    mism = np.empty(size, dtype=np.int64)
    sample_rows = np.arange(size, dtype=np.int64)
    for _ in range(max_iter):
        _assign_nearest(sample_signatures, sample_rows, sample_signatures[medoids], label, mism)
        if not _update_medoids(sample_signatures, sample_weights, label, medoids, candidates):
            break
        medoids = np.sort(medoids)
    _assign_nearest(sample_signatures, sample_rows, sample_signatures[medoids], label, mism)
    # a single document that nothing else is nearest to (copies of it are a crowded spot)
    alone = np.bincount(label, weights=sample_weights, minlength=medoids.size) == 1.0
    if not alone.all():
        medoids = medoids[~alone]
    medoid_rows = distinct_rows[sample[medoids]]
    label = np.empty(live.size, dtype=np.int64)
    mism = np.empty(live.size, dtype=np.int64)
    _assign_nearest(signatures, live, np.ascontiguousarray(signatures[medoid_rows]), label, mism)
    no_topic = np.zeros(n, dtype=np.bool_)
    no_topic[live[mism == num_perm]] = True
    assigned = mism < num_perm
    cluster_id[live[assigned]] = medoid_rows[label[assigned]]
    distance[live] = mism / num_perm
    cluster_size = np.bincount(cluster_id, minlength=n).astype(np.int64)[cluster_id]
    return TopicClusters(cluster_id, cluster_size, distance, medoid_rows, empty, no_topic)
