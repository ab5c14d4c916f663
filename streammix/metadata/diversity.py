"""A MinHash-based diversity score following SampleMix (DESIGN.md section 4).

SampleMix (Xi et al., 2025) clusters the corpus (k-means over text embeddings) and values a
sample by its cluster: a cluster that is *spread out* (low density: its members differ
from one another) and *well separated* from the other clusters (its region of the data
space is rare) holds diverse data; a sample of a tight, crowded cluster next to other
clusters is redundant. streammix reconstructs this from MinHash signatures of word
unigrams (or short shingles), with ``d(x, y) = 1 - J(x, y)`` the estimated Jaccard distance
(fraction of unequal signature values) standing in for the embedding distance:

1. **Topics** ``C``: k-medoids in MinHash space
   (:func:`streammix.metadata.clusters.topic_clusters`; a medoid plays the centroid's part,
   since Jaccard space has no means). ``m(C)`` is the medoid, ``d(x) = d(x, m(C))``.
2. **Compactness** ``comp(C)``: the mean distance of the members to their medoid, each
   member weighted by ``1 / dup_size(x)`` so that a near-duplicate cluster counts once
   (copies must not make a cluster look tight). Large = spread out = diverse. A cluster
   whose members are all copies of the medoid (one distinct document) has no spread to
   measure; it is an isolated point and gets ``comp = 1``.
3. **Separation** ``sep(C)``: the mean distance of ``m(C)`` to its ``neighbors`` (default
   3) nearest other medoids (1 when there is a single cluster). Large = far from other
   topics = rare.
4. **Per sample**: ``raw(x) = sep(C) * (comp(C) + loc(x)) / 2 / dup_size(x)`` with
   ``loc(x) = d(x)`` (``loc = 1`` in a cluster of one distinct document). The cluster term
   ``comp * sep`` is SampleMix's; ``loc`` is the sample-level instance of the same quantity
   (``comp`` is its weighted mean over the cluster), so the cluster's members are told
   apart by how far they sit from its crowded centre and the mean of ``raw`` over a
   cluster's distinct documents is exactly ``comp * sep``. Dividing by the
   near-duplicate cluster size ``dup_size`` makes k copies weigh like one sample.
   Empty documents and documents with no topic (sharing no MinHash value with any medoid,
   see :func:`~streammix.metadata.clusters.topic_clusters`) get ``raw = 0``: MinHash gives
   no evidence of where they sit, and in pre-training data such documents are mostly
   junk (random strings, encoded data); the quality score then decides their weight.
5. **Normalization** to [0, 1]: ``"rank"`` (default; average rank of ``raw`` over the
   build, ties share a rank, ``rank / (N - 1)``, like the quality scores), ``"minmax"``,
   or ``"none"`` (``raw`` is already in [0, 1]).

Why this is faithful: both of SampleMix's terms are kept with their meaning (spread of the
sample's cluster around its centre, distance of that centre to the other centres) and
their product; only the space changes (MinHash Jaccard instead of embeddings, medoids
instead of means) and copies are discounted explicitly, which SampleMix gets implicitly
from embeddings of copies collapsing onto one point. For the same reason the build first
collapses every signature value that no other document holds into one out-of-vocabulary
value (:func:`~streammix.metadata.clusters.collapse_unshared_values`): an encoder puts
text it cannot read (random characters, blobs) in one tight region, so SampleMix gives it
low compactness and low diversity, whereas in raw word-set space such text shares nothing
and would look like the most diverse data of all (on issue 16's injected corpus, 29 of 30
random-character documents had diversity above 0.93 and sat outside the bottom quartile
of ``p`` at ``alpha = 0.8``; with the collapse all 30 are in it). The embedding backend
(:mod:`streammix.metadata.embedding_topics`, k-means over sentence embeddings with the
cosine distance ``(1 - cos) / 2``) is the paper's own setting; :func:`diversity_from_topics`
computes steps 2, 4 and 5 for either clustering.

Sums run in a canonical order (cluster, signature hash, duplicate size, id) and the
clustering depends only on signature contents and the seed, so permuting the input
permutes the scores exactly, and threads never change them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from streammix.metadata.clusters import (
    TopicClusters,
    _check_signatures,
    signature_keys,
    topic_clusters,
)

__all__ = [
    "DiversityScores",
    "diversity_from_topics",
    "diversity_scores",
    "medoid_separation",
    "topic_clusters",
]

NORMALIZATIONS = ("rank", "minmax", "none")


@dataclass(frozen=True)
class DiversityScores:
    """Per sample: the normalized score and the terms it was computed from."""

    diversity: np.ndarray  # float32 in [0, 1]
    raw: np.ndarray  # float64, step 4
    compactness: np.ndarray  # float64, comp of the sample's topic (0 for empty documents)
    separation: np.ndarray  # float64, sep of the sample's topic (0 for empty documents)


def canonical_order(cluster_id, row_keys, dup_size) -> np.ndarray:
    """Samples sorted by (cluster, signature hash, duplicate-cluster size, id).

    Samples that tie up to the id have identical signatures and duplicate sizes, so they are
    interchangeable: anything summed in this order is independent of the numbering.
    """
    n = cluster_id.shape[0]
    return np.lexsort((np.arange(n), dup_size, row_keys, cluster_id))


@numba.njit(cache=True, parallel=True)
def _pairwise_mismatches(signatures: np.ndarray, out: np.ndarray) -> None:
    for i in numba.prange(signatures.shape[0]):
        for j in range(signatures.shape[0]):
            count = 0
            for k in range(signatures.shape[1]):
                if signatures[i, k] != signatures[j, k]:
                    count += 1
            out[i, j] = count


def medoid_separation(medoid_signatures: np.ndarray, *, neighbors: int = 3) -> np.ndarray:
    """``sep`` of each medoid (step 3): mean distance to its ``neighbors`` nearest others."""
    _check_signatures(medoid_signatures)
    if isinstance(neighbors, bool) or not isinstance(neighbors, (int, np.integer)) or neighbors < 1:
        raise ValueError(f"neighbors must be a positive integer, got {neighbors!r}")
    k, num_perm = medoid_signatures.shape
    if k < 2:
        return np.ones(k, dtype=np.float64)
    mism = np.empty((k, k), dtype=np.int64)
    _pairwise_mismatches(np.ascontiguousarray(medoid_signatures), mism)
    np.fill_diagonal(mism, num_perm + 1)
    take = min(int(neighbors), k - 1)
    nearest = np.sort(mism, axis=1)[:, :take]
    return nearest.sum(axis=1) / (take * num_perm)


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


def _check_ids(name: str, ids: np.ndarray, n: int) -> None:
    if n and (ids.min() < 0 or ids.max() >= n or np.any(ids[ids] != ids)):
        raise ValueError(f"{name} must hold cluster ids (row indices of a member of the cluster)")


def diversity_scores(
    signatures: np.ndarray,
    *,
    topics: TopicClusters,
    dup_cluster_size: np.ndarray,
    dup_cluster_id: np.ndarray | None = None,
    neighbors: int = 3,
    normalize: str = "rank",
) -> DiversityScores:
    """Diversity of every sample (see the module docstring).

    ``signatures`` are the ones ``topics`` was computed from
    (:func:`~streammix.metadata.clusters.topic_clusters`); ``dup_cluster_id`` and
    ``dup_cluster_size`` come from :func:`streammix.metadata.clusters.duplicate_clusters`
    (without ``dup_cluster_id``, copies are recognized by their size only).
    """
    _check_signatures(signatures)
    signatures = np.ascontiguousarray(signatures)
    medoids = np.asarray(topics.medoids, dtype=np.int64)
    if medoids.size and (medoids.min() < 0 or medoids.max() >= signatures.shape[0]):
        raise ValueError("topics were computed for other signatures")
    separation = medoid_separation(np.ascontiguousarray(signatures[medoids]), neighbors=neighbors)
    return diversity_from_topics(
        topics,
        separation=separation,
        row_keys=signature_keys(signatures),
        dup_cluster_size=dup_cluster_size,
        dup_cluster_id=dup_cluster_id,
        normalize=normalize,
    )


def diversity_from_topics(
    topics: TopicClusters,
    *,
    separation: np.ndarray,
    row_keys: np.ndarray,
    dup_cluster_size: np.ndarray,
    dup_cluster_id: np.ndarray | None = None,
    normalize: str = "rank",
) -> DiversityScores:
    """Steps 2, 4 and 5 for any topic clustering (MinHash medoids or embedding k-means).

    ``separation[j]`` is ``sep`` of the topic of ``topics.medoids[j]``; ``row_keys`` is a
    64-bit hash of each sample's representation (equal representations, equal keys), which
    fixes the summation order.
    """
    n = np.asarray(topics.cluster_id).shape[0]
    dup = np.asarray(dup_cluster_size)
    dup_id = np.arange(n) if dup_cluster_id is None else np.asarray(dup_cluster_id)
    topic = np.asarray(topics.cluster_id)
    if dup.shape != (n,) or dup_id.shape != (n,) or np.asarray(row_keys).shape != (n,):
        raise ValueError(f"cluster ids, sizes and keys must have shape ({n},)")
    if topics.distance.shape != (n,) or topics.empty.shape != (n,):
        raise ValueError(f"topics were computed for another number of samples than {n}")
    medoids = np.asarray(topics.medoids, dtype=np.int64)
    if np.asarray(separation).shape != medoids.shape:
        raise ValueError(f"separation must have one value per topic ({medoids.size})")
    _check_ids("topic cluster_id", topic, n)
    _check_ids("dup_cluster_id", dup_id, n)
    if n and dup.min() < 1:
        raise ValueError("dup_cluster_size must be >= 1")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    topic = topic.astype(np.int64)
    dup = dup.astype(np.float64)
    weight = 1.0 / dup
    distance = np.asarray(topics.distance, dtype=np.float64)
    order = canonical_order(topic, np.asarray(row_keys), dup)
    sorted_topic = topic[order]
    numerator = np.bincount(sorted_topic, weights=(weight * distance)[order], minlength=n)
    denominator = np.bincount(sorted_topic, weights=weight[order], minlength=n)
    other = (dup_id != dup_id[topic]).astype(np.int64)
    lone = np.bincount(topic, weights=other, minlength=n) == 0
    comp = np.divide(numerator, denominator, out=np.ones(n), where=denominator > 0)
    comp[lone] = 1.0
    sep = np.zeros(n, dtype=np.float64)
    sep[medoids] = np.asarray(separation, dtype=np.float64)
    local = np.where(lone[topic], 1.0, distance)
    raw = sep[topic] * (comp[topic] + local) / 2.0 / dup
    empty = np.asarray(topics.empty, dtype=bool) | np.asarray(topics.no_topic, dtype=bool)
    raw[empty] = 0.0
    comp_per_sample = np.where(empty, 0.0, comp[topic])
    sep_per_sample = np.where(empty, 0.0, sep[topic])
    diversity = np.clip(_normalize(raw, normalize), 0.0, 1.0).astype(np.float32)
    return DiversityScores(diversity, raw, comp_per_sample, sep_per_sample)
