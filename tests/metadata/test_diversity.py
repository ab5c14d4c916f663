"""Diversity on constructed neighbourhoods, normalization, order independence, errors."""

import random

import numpy as np
import pytest

from streammix.metadata.clusters import duplicate_clusters, topic_clusters
from streammix.metadata.diversity import compactness, diversity_scores, separation
from streammix.metadata.minhash import signatures_from_shingles


def _topic_doc(
    rnd: random.Random, core: list[str], noise: str, shared: int = 70, own: int = 10
) -> list[bytes]:
    """A bag of words: ``shared`` words of the topic's core plus ``own`` unique words."""
    words = rnd.sample(core, shared) + [f"{noise}{rnd.randrange(10**9)}" for _ in range(own)]
    return [w.encode() for w in words]


def _scores(sets: list[list[bytes]], *, topic_threshold: float = 0.5, normalize: str = "none"):
    signatures = signatures_from_shingles(sets, num_perm=128)
    dup_id, dup_size = duplicate_clusters(signatures, threshold=0.9)
    topic_id, _ = topic_clusters(signatures, threshold=topic_threshold)
    scores = diversity_scores(
        signatures,
        dup_cluster_size=dup_size,
        topic_cluster_id=topic_id,
        dup_cluster_id=dup_id,
        normalize=normalize,
    )
    return scores, topic_id


def test_exact_duplicates_score_lower_than_a_unique_document() -> None:
    rnd = random.Random(0)
    sets = [_topic_doc(rnd, [f"t{k}w{i}" for i in range(80)], "n") for k in range(6)]
    sets += [sets[0]] * 3  # document 0 now exists four times
    scores, _ = _scores(sets)
    assert np.all(scores[[0, 6, 7, 8]] == scores[0])
    assert np.all(scores[1:6] > scores[0])
    assert scores[0] == pytest.approx(scores[1] / 4, rel=0.2)


def test_unique_document_among_near_copies_scores_highest() -> None:
    rnd = random.Random(1)
    base = _topic_doc(rnd, [f"w{i}" for i in range(200)], "n", shared=100, own=0)
    copies = []
    for _ in range(10):
        copy = list(base)
        copy[rnd.randrange(len(copy))] = f"edit{rnd.randrange(10**9)}".encode()
        copies.append(copy)
    unique = _topic_doc(rnd, [f"u{i}" for i in range(200)], "m", shared=100, own=0)
    scores, _ = _scores(copies + [unique])
    assert scores[-1] == scores.max() and np.all(scores[:-1] < 0.5 * scores[-1])


def test_well_separated_topic_scores_higher_than_overlapping_topics() -> None:
    rnd = random.Random(2)
    core_a = [f"a{i}" for i in range(80)]
    core_b = core_a[:55] + [f"b{i}" for i in range(25)]  # J(a doc, b doc) ~ 0.36
    # J within a topic ~ 0.62: three topic clusters at 0.5; a and b are LSH neighbours at 0.2.
    core_z = [f"z{i}" for i in range(80)]  # shares nothing
    sets = [
        _topic_doc(rnd, core, tag)
        for core, tag in ((core_a, "x"), (core_b, "y"), (core_z, "z"))
        for _ in range(8)
    ]
    scores, topic_id = _scores(sets)
    assert len(np.unique(topic_id)) == 3
    assert scores[16:].min() > scores[:16].max()


def test_scores_are_float32_in_unit_interval_for_every_normalization() -> None:
    rnd = random.Random(3)
    sets = [_topic_doc(rnd, [f"c{i % 7}w{j}" for j in range(80)], "n") for i in range(40)] + [[]]
    for mode in ("none", "rank", "minmax"):
        scores, _ = _scores(sets, normalize=mode)
        assert scores.dtype == np.float32 and scores.min() >= 0.0 and scores.max() <= 1.0
        assert scores[-1] == scores.min()  # the empty document
    rank, _ = _scores(sets, normalize="rank")
    assert rank.min() == 0.0 and len(np.unique(rank)) > 3  # ties share their average rank


def test_permuting_the_input_permutes_the_scores_exactly() -> None:
    rnd = random.Random(4)
    sets = [_topic_doc(rnd, [f"c{i % 5}w{j}" for j in range(80)], "n") for i in range(60)]
    sets += [sets[3], sets[3], sets[10]]
    scores, _ = _scores(sets, normalize="rank")
    perm = np.random.default_rng(0).permutation(len(sets))
    permuted, _ = _scores([sets[i] for i in perm], normalize="rank")
    assert np.array_equal(scores[perm], permuted)


def test_components() -> None:
    sig = signatures_from_shingles([[b"a", b"b"], [b"a", b"b"], [b"c"]], num_perm=16)
    cluster_id = np.array([0, 0, 2])
    rep = np.array([0, -1, 2])
    comp = compactness(
        sig, cluster_id, np.array([0, 1, 2]), rep, np.array([0, 1, 2]), np.array([1, 1, 1])
    )
    assert comp.tolist() == [0.0, 0.0, 1.0]
    assert separation(sig[[0, 2]]).tolist() == [1.0, 1.0]
    assert separation(sig[[0, 1]]).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dup_cluster_size": np.array([1, 1])}, "shape"),
        ({"dup_cluster_size": np.array([0, 1, 1])}, "dup_cluster_size"),
        ({"topic_cluster_id": np.array([1, 1, 2])}, "topic_cluster_id"),
        ({"dup_cluster_id": np.array([0, 5, 2])}, "dup_cluster_id"),
        ({"normalize": "zscore"}, "normalize"),
        ({"neighbor_window": 0}, "neighbor_window"),
        ({"neighbor_threshold": 2.0}, "neighbor_threshold"),
    ],
)
def test_invalid_inputs(kwargs, match) -> None:
    sig = signatures_from_shingles([[b"a"], [b"b"], [b"c"]], num_perm=16)
    args = {"dup_cluster_size": np.ones(3, np.int64), "topic_cluster_id": np.arange(3)} | kwargs
    with pytest.raises(ValueError, match=match):
        diversity_scores(sig, **args)
