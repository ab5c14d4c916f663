"""Spherical k-means topics over embeddings: recovered blobs, order independence, errors."""

import numpy as np
import pytest

from streammix.metadata.diversity import diversity_from_topics
from streammix.metadata.embedding_topics import embedding_keys, kmeans_topics


def _blobs(seed: int = 0, per: int = 20, dim: int = 16, spread: float = 0.15):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:3] * 1.0
    points = np.concatenate([c + spread * rng.standard_normal((per, dim)) for c in centres])
    labels = np.repeat(np.arange(3), per)
    return points.astype(np.float32), labels


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


def test_blobs_are_recovered_and_ids_are_members() -> None:
    points, labels = _blobs()
    result = kmeans_topics(points, num_clusters=3, seed=1)
    topics = result.topics
    assert _same_partition(topics.cluster_id, labels)
    assert np.all(topics.cluster_id[topics.cluster_id] == topics.cluster_id)
    assert np.all((topics.distance >= 0) & (topics.distance <= 1))
    assert result.separation.shape == (3,) and np.all(result.separation > 0.3)


def test_order_independence_and_duplicates_score_lower() -> None:
    points, _ = _blobs(seed=2)
    points = np.concatenate([points, points[[5, 5, 5]]])  # row 5 now exists four times
    n = points.shape[0]
    dup_id = np.arange(n)
    dup_id[[60, 61, 62]] = 5
    dup_size = np.bincount(dup_id, minlength=n)[dup_id]

    def scores(rows: np.ndarray, ids: np.ndarray, sizes: np.ndarray):
        result = kmeans_topics(rows, num_clusters=3, seed=4)
        return result, diversity_from_topics(
            result.topics,
            separation=result.separation,
            row_keys=embedding_keys(rows),
            dup_cluster_size=sizes,
            dup_cluster_id=ids,
            normalize="none",
        )

    result, div = scores(points, dup_id, dup_size)
    assert div.raw[5] < np.median(div.raw[:60])
    assert np.all(div.raw[[60, 61, 62]] == div.raw[5])
    perm = np.random.default_rng(0).permutation(n)
    inverse = np.argsort(perm)
    result_p, div_p = scores(points[perm], inverse[dup_id[perm]], dup_size[perm])
    assert _same_partition(result.topics.cluster_id[perm], result_p.topics.cluster_id)
    np.testing.assert_allclose(div.raw[perm], div_p.raw, rtol=1e-12)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (np.zeros((0, 3)), {}, "non-empty"),
        (np.zeros(3), {}, "2-D"),
        (np.array([[np.nan, 1.0]]), {}, "finite"),
        (np.ones((3, 2)), {"num_clusters": 0}, "num_clusters"),
        (np.ones((3, 2)), {"seed": -2}, "seed"),
    ],
)
def test_invalid_inputs(args, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        kmeans_topics(args, **kwargs)
