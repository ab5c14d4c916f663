"""A MinHash-based diversity score following SampleMix (DESIGN.md section 4).

SampleMix values a sample by how crowded its neighbourhood is: samples in compact, crowded
clusters, close to other clusters, or duplicated, are worth less than samples in sparse,
well-separated regions. streammix estimates this from MinHash signatures, with ``J(x, y)``
the estimated Jaccard similarity (fraction of equal signature values):

1. **Topic clusters** (:func:`~streammix.metadata.clusters.topic_clusters`): LSH components at a low threshold (default
   0.5), with a candidate joining only if ``J >= threshold`` with the first member of its
   bucket. Use signatures of word unigrams (``ShingleConfig(n=1)``) for topical neighbours,
   or the near-duplicate signatures for a cheaper, stricter notion. The representative
   ``rep(C)`` of cluster ``C`` is the member with the smallest whole-signature hash
   (:func:`~streammix.metadata.clusters.signature_keys`; ties are identical signatures,
   broken by id), so it does not depend on how samples are numbered.
2. **Compactness** ``comp(C)``: the mean of ``1 - J(x, rep(C))`` over the members ``x`` of
   ``C`` outside the representative's near-duplicate cluster, each weighted by
   ``1 / dup_size(x)`` so that every duplicate cluster counts once. It is the spread of the
   cluster around its representative: small when distinct documents crowd together;
   ``comp = 1`` when nothing but copies of the representative is in the cluster (copies are
   handled by step 4). Sums run in a canonical order (cluster, signature hash, ...), so
   they are bit-identical however the input is ordered.
3. **Separation** ``sep(C) = 1 - max J(rep(C), rep(C'))`` over other representatives
   ``C'``. The nearest representatives are searched among LSH candidates of a looser banding
   (``neighbor_threshold``, default 0.2): within each bucket, representatives sorted by
   (band key, signature hash) are compared with up to ``neighbor_window`` neighbours on
   each side. A representative without candidates gets ``sep = 1``.
4. **Duplicate discount**: ``raw(x) = comp(C) * sep(C) / dup_size(x)``, where ``dup_size``
   is the size of x's near-duplicate cluster, so a cluster of k copies weighs like one sample.
   Empty documents (empty-set signature) get ``raw = 0``.
5. **Normalization** to [0, 1]: ``"rank"`` (default; average rank of ``raw`` over the build,
   ties share a rank, ``rank / (N - 1)``, like the quality scores), ``"minmax"``, or
   ``"none"`` (``raw`` is already in [0, 1]).

Every choice depends on signature contents; ids only break ties between identical
signatures, which are interchangeable. So permuting the input permutes the scores, and
threads never change them.
"""

from __future__ import annotations

import numba
import numpy as np

from streammix.metadata.clusters import (
    _band_keys,
    _check_signatures,
    _estimated_similarity,
    _validate_threshold,
    lsh_bands_rows,
    signature_keys,
    topic_clusters,
)
from streammix.metadata.minhash import is_empty_signature

__all__ = ["diversity_scores", "topic_clusters", "separation", "compactness"]

NORMALIZATIONS = ("rank", "minmax", "none")


def canonical_order(cluster_id, row_keys, dup_size) -> np.ndarray:
    """Samples sorted by (cluster, signature hash, duplicate-cluster size, id).

    Samples that tie up to the id have identical signatures and duplicate sizes, so they are
    interchangeable: anything computed in this order is independent of the numbering.
    """
    n = cluster_id.shape[0]
    return np.lexsort((np.arange(n), dup_size, row_keys, cluster_id))


def representatives(cluster_id: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Per cluster id, its first member in ``order`` (:func:`canonical_order`); -1 elsewhere."""
    sorted_ids = cluster_id[order]
    first = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]
    rep = np.full(cluster_id.shape[0], -1, dtype=np.int64)
    rep[sorted_ids[first]] = order[first]
    return rep


@numba.njit(cache=True, parallel=True)
def _mismatches_to_representative(signatures, rep_of_sample, out) -> None:
    for i in numba.prange(signatures.shape[0]):
        r = rep_of_sample[i]
        count = 0
        for k in range(signatures.shape[1]):
            if signatures[i, k] != signatures[r, k]:
                count += 1
        out[i] = count


@numba.njit(cache=True)
def _weighted_mean_distance(order, cluster_id, rep, mismatches, dup_id, dup_size, num_perm, out):
    """Per cluster: mean of ``mismatches / num_perm`` weighted by ``1 / dup_size``, over
    members outside the representative's duplicate cluster, summed in canonical order."""
    numerator = 0.0
    denominator = 0.0
    for p in range(order.shape[0] + 1):
        if p > 0 and (p == order.shape[0] or cluster_id[order[p]] != cluster_id[order[p - 1]]):
            c = cluster_id[order[p - 1]]
            out[c] = numerator / (denominator * num_perm) if denominator > 0.0 else 1.0
            numerator = 0.0
            denominator = 0.0
        if p == order.shape[0]:
            break
        m = order[p]
        if dup_id[m] != dup_id[rep[cluster_id[m]]]:
            weight = 1.0 / dup_size[m]
            numerator += weight * mismatches[m]
            denominator += weight


def compactness(signatures, cluster_id, order, rep, dup_id, dup_size) -> np.ndarray:
    """``comp`` of each sample's cluster, per sample (step 2 of the module docstring)."""
    n, num_perm = signatures.shape
    mismatches = np.empty(n, dtype=np.int64)
    _mismatches_to_representative(signatures, rep[cluster_id], mismatches)
    per_cluster = np.ones(n, dtype=np.float64)
    _weighted_mean_distance(
        order,
        cluster_id,
        rep,
        mismatches,
        dup_id,
        dup_size.astype(np.float64),
        num_perm,
        per_cluster,
    )
    return per_cluster[cluster_id]


@numba.njit(cache=True, parallel=True)
def _nearest_in_buckets(keys, order, signatures, window, best) -> None:
    """``best[i] = max(best[i], J)`` over up to ``window`` same-key neighbours on each side."""
    n = order.shape[0]
    for p in numba.prange(n):
        i = order[p]
        top = best[i]
        for q in range(max(0, p - window), min(n, p + window + 1)):
            if q != p and keys[order[q]] == keys[i]:
                top = max(top, _estimated_similarity(signatures, i, order[q]))
        best[i] = top


def separation(
    rep_signatures: np.ndarray, *, neighbor_threshold: float = 0.2, neighbor_window: int = 16
) -> np.ndarray:
    """``sep`` of each representative (step 3), given the representatives' signatures."""
    n, num_perm = rep_signatures.shape
    best = np.zeros(n, dtype=np.float64)
    if n < 2:
        return np.ones(n, dtype=np.float64)
    bands, rows = lsh_bands_rows(
        _validate_threshold(neighbor_threshold, "neighbor_threshold"), num_perm
    )
    row_keys = signature_keys(rep_signatures)
    keys = np.empty(n, dtype=np.uint64)
    for band in range(bands):
        _band_keys(
            np.ascontiguousarray(rep_signatures[:, band * rows : (band + 1) * rows]), band, keys
        )
        order = np.lexsort((row_keys, keys))
        _nearest_in_buckets(keys, order, rep_signatures, int(neighbor_window), best)
    return 1.0 - best


def _normalize(raw: np.ndarray, mode: str) -> np.ndarray:
    n = raw.shape[0]
    if mode == "none" or n == 0:
        return raw
    if mode == "minmax":
        lo, hi = raw.min(), raw.max()
        return np.ones(n) if hi == lo else (raw - lo) / (hi - lo)
    if n == 1:
        return np.ones(1)
    order = np.argsort(raw, kind="stable")
    sorted_raw = raw[order]
    starts = np.flatnonzero(np.r_[True, sorted_raw[1:] != sorted_raw[:-1]])
    ends = np.r_[starts[1:], n]
    mean_rank = (starts + ends - 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks / (n - 1)


def diversity_scores(
    signatures: np.ndarray,
    *,
    dup_cluster_size: np.ndarray,
    topic_cluster_id: np.ndarray,
    dup_cluster_id: np.ndarray | None = None,
    neighbor_threshold: float = 0.2,
    neighbor_window: int = 16,
    normalize: str = "rank",
) -> np.ndarray:
    """Diversity of every sample as ``float32`` in [0, 1] (see the module docstring).

    ``signatures`` are the ones ``topic_cluster_id`` was computed from (see
    :func:`topic_clusters`); ``dup_cluster_id`` and ``dup_cluster_size`` come from
    :func:`streammix.metadata.clusters.duplicate_clusters` (without ``dup_cluster_id``,
    duplicates of a representative are only recognized by their size).
    """
    _check_signatures(signatures)
    signatures = np.ascontiguousarray(signatures)
    n = signatures.shape[0]
    dup = np.asarray(dup_cluster_size)
    topic = np.asarray(topic_cluster_id)
    dup_id = np.arange(n) if dup_cluster_id is None else np.asarray(dup_cluster_id)
    if dup.shape != (n,) or topic.shape != (n,) or dup_id.shape != (n,):
        raise ValueError(f"cluster ids and sizes must have shape ({n},)")
    for name, ids in (("topic_cluster_id", topic), ("dup_cluster_id", dup_id)):
        if n and (ids.min() < 0 or np.any(ids > np.arange(n)) or np.any(ids[ids] != ids)):
            raise ValueError(f"{name} must hold cluster ids (the smallest member id of a cluster)")
    if n and dup.min() < 1:
        raise ValueError("dup_cluster_size must be >= 1")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if neighbor_window < 1:
        raise ValueError(f"neighbor_window must be positive, got {neighbor_window}")
    topic = topic.astype(np.int64)
    order = canonical_order(topic, signature_keys(signatures), dup)
    rep = representatives(topic, order)
    comp = compactness(signatures, topic, order, rep, dup_id.astype(np.int64), dup)
    cluster_ids = np.flatnonzero(rep >= 0)
    sep_per_cluster = np.ones(n, dtype=np.float64)
    sep_per_cluster[cluster_ids] = separation(
        signatures[rep[cluster_ids]],
        neighbor_threshold=neighbor_threshold,
        neighbor_window=neighbor_window,
    )
    raw = comp * sep_per_cluster[topic] / dup.astype(np.float64)
    raw[is_empty_signature(signatures)] = 0.0
    return np.clip(_normalize(raw, normalize), 0.0, 1.0).astype(np.float32)
