"""Topic clusters from sentence embeddings: seeded, order-independent spherical k-means.

This is SampleMix's own setting (k-means over text embeddings); the embeddings come from
``streammix.pipeline.embeddings`` (a local sentence-transformers model, torch) and everything
here is numpy. Rows are L2-normalized; the distance is ``d(x, y) = (1 - cos(x, y)) / 2`` in
[0, 1], the stand-in for the estimated Jaccard distance of the MinHash backend, so
:func:`streammix.metadata.diversity.diversity_from_topics` applies unchanged.

1. Identical embeddings are one point (weight = copies); each distinct row gets the
   priority ``mix64(hash(row bytes) ^ seed key)`` and the canonical order is by priority,
   so every tie below is broken by content and seed, never by input position.
2. k-means++ seeding on the distinct rows (``weight * D**2``, counter-based uniforms
   ``uniform01(derive_key(seed, PURPOSE_TOPICS, 1, step))``).
3. Lloyd iterations: assign to the nearest centroid (ties: the lowest centroid index),
   recompute each centroid as the normalized weighted mean of its members, summed in
   canonical order (an empty cluster keeps its centroid); stop when no assignment changes
   or after ``max_iter`` rounds.
4. A topic's id is its member nearest to the centroid (ties: canonical order; the smallest
   row among identical copies), ``distance`` is each row's distance to its centroid, and
   ``separation`` is the mean distance of the centroid to its ``neighbors`` nearest other
   centroids (1 with a single topic).

The default number of clusters is the MinHash backend's
(:func:`streammix.metadata.clusters.auto_num_clusters`). Cost: ``O(iterations * n * k *
dim)`` floating-point operations as matrix products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streammix.core.rng import PURPOSE_TOPICS, derive_key, uniform01
from streammix.metadata.clusters import (
    TopicClusters,
    _check_count,
    _priorities,
    auto_num_clusters,
    signature_keys,
)


@dataclass(frozen=True)
class EmbeddingTopics:
    topics: TopicClusters
    centroids: np.ndarray  # float64 [k, dim], unit length, in the order of topics.medoids
    separation: np.ndarray  # float64 [k]


def embedding_keys(embeddings: np.ndarray) -> np.ndarray:
    """A 64-bit hash of every row's float32 bytes (equal rows, equal keys)."""
    rows = np.ascontiguousarray(embeddings, dtype=np.float32)
    return signature_keys(rows.view(np.uint32).reshape(rows.shape[0], -1))


def _normalized(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return np.divide(embeddings, norms, out=np.zeros_like(embeddings), where=norms > 0)


def _distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.clip((1.0 - points @ centroids.T) / 2.0, 0.0, 1.0)


def kmeans_topics(
    embeddings: np.ndarray,
    *,
    num_clusters: int | None = None,
    seed: int = 0,
    max_iter: int = 50,
    neighbors: int = 3,
) -> EmbeddingTopics:
    """Spherical k-means topics of ``embeddings`` ``[n, dim]`` (see the module docstring)."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array, got shape {embeddings.shape}")
    if not np.issubdtype(embeddings.dtype, np.floating) or not np.isfinite(embeddings).all():
        raise ValueError("embeddings must be finite floating-point numbers")
    if num_clusters is not None:
        num_clusters = _check_count("num_clusters", num_clusters, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    max_iter = _check_count("max_iter", max_iter, 0)
    neighbors = _check_count("neighbors", neighbors, 1)
    n = embeddings.shape[0]
    rows32 = np.ascontiguousarray(embeddings, dtype=np.float32)
    keys = embedding_keys(rows32)
    by_key = np.lexsort((np.arange(n), keys))
    first = np.r_[True, keys[by_key][1:] != keys[by_key][:-1]]
    starts = np.flatnonzero(first)
    distinct_rows = by_key[starts]
    weights = np.diff(np.r_[starts, n]).astype(np.float64)
    priority = _priorities(keys[distinct_rows], np.uint64(derive_key(int(seed), PURPOSE_TOPICS)))
    canonical = np.argsort(priority, kind="stable")
    distinct_rows, weights = distinct_rows[canonical], weights[canonical]
    points = _normalized(rows32[distinct_rows].astype(np.float64))
    m = points.shape[0]
    k = min(auto_num_clusters(m) if num_clusters is None else num_clusters, m)
    chosen = [0]
    nearest = _distances(points, points[:1])[:, 0]
    for step in range(1, k):
        mass = weights * nearest**2
        total = mass.sum()
        if total <= 0.0:
            break
        target = uniform01(derive_key(int(seed), PURPOSE_TOPICS, 1, step)) * total
        pick = int(min(np.searchsorted(np.cumsum(mass), target, side="right"), m - 1))
        chosen.append(pick)
        nearest = np.minimum(nearest, _distances(points, points[pick : pick + 1])[:, 0])
    centroids = points[chosen].copy()
    label = np.argmin(_distances(points, centroids), axis=1)
    for _ in range(max_iter):
        for c in range(centroids.shape[0]):
            members = label == c  # in canonical order, so sums do not depend on the input
            if members.any():
                total = (points[members] * weights[members, None]).sum(axis=0)
                norm = np.linalg.norm(total)
                centroids[c] = total / norm if norm > 0 else centroids[c]
        new_label = np.argmin(_distances(points, centroids), axis=1)
        if np.array_equal(new_label, label):
            break
        label = new_label
    used = np.unique(label)
    centroids = centroids[used]
    label = np.searchsorted(used, label)
    distance_distinct = _distances(points, centroids)[np.arange(m), label]
    medoid_pos = np.array(
        [
            np.flatnonzero(label == c)[np.argmin(distance_distinct[label == c])]
            for c in range(len(used))
        ]
    )
    medoids = distinct_rows[medoid_pos]
    all_points = _normalized(rows32.astype(np.float64))
    all_d = _distances(all_points, centroids)
    all_label = np.argmin(all_d, axis=1)
    cluster_id = medoids[all_label].astype(np.int64)
    distance = all_d[np.arange(n), all_label]
    cluster_size = np.bincount(cluster_id, minlength=n).astype(np.int64)[cluster_id]
    if centroids.shape[0] < 2:
        separation = np.ones(centroids.shape[0])
    else:
        between = _distances(centroids, centroids)
        np.fill_diagonal(between, np.inf)
        take = min(neighbors, centroids.shape[0] - 1)
        separation = np.sort(between, axis=1)[:, :take].mean(axis=1)
    zeros = np.zeros(n, dtype=np.bool_)
    topics = TopicClusters(
        cluster_id, cluster_size, distance, medoids.astype(np.int64), zeros, zeros
    )
    return EmbeddingTopics(topics, centroids, separation)
