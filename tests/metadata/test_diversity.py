"""Topic clusters (k-medoids in MinHash space) and diversity on constructed and real text."""

import random
import sysconfig
from pathlib import Path

import numba
import numpy as np
import pytest

from streammix.metadata.clusters import (
    UNSHARED_VALUE,
    auto_num_clusters,
    collapse_unshared_values,
    duplicate_clusters,
    topic_clusters,
)
from streammix.metadata.diversity import diversity_scores, medoid_separation
from streammix.metadata.minhash import signatures_from_shingles, signatures_from_texts
from streammix.metadata.normalize import rank_normalize
from streammix.metadata.quality import HeuristicScorer
from streammix.metadata.samplemix import samplemix_weights
from streammix.metadata.shingle import ShingleConfig

UNIGRAMS = ShingleConfig(n=1)
STOP = "the of and to in a is that for it as was with be by on not this are or from at".split()


def _topic_doc(
    rnd: random.Random, core: list[str], noise: str, shared: int = 70, own: int = 10
) -> list[bytes]:
    """A bag of words: ``shared`` words of the topic's core plus ``own`` unique words."""
    words = rnd.sample(core, shared) + [f"{noise}{rnd.randrange(10**9)}" for _ in range(own)]
    return [w.encode() for w in words]


def _topic_text(rnd: random.Random, vocabulary: list[str], words: int = 120) -> str:
    """Prose-like text: stop words mixed with words drawn from one topic's vocabulary."""
    return " ".join(
        rnd.choice(STOP) if rnd.random() < 0.4 else rnd.choice(vocabulary) for _ in range(words)
    )


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


def _scores(sets: list[list[bytes]], *, num_clusters=None, normalize: str = "none"):
    signatures = signatures_from_shingles(sets, num_perm=128)
    dup_id, dup_size = duplicate_clusters(signatures, threshold=0.9)
    topics = topic_clusters(signatures, num_clusters=num_clusters, seed=3)
    scores = diversity_scores(
        signatures,
        topics=topics,
        dup_cluster_size=dup_size,
        dup_cluster_id=dup_id,
        normalize=normalize,
    )
    return scores, topics


RIVER = "river water fish boat bank flood stream current shore bridge rain valley".split()
CODE = "compiler function variable loop pointer memory stack thread kernel byte cache".split()
MUSIC = "guitar melody chord rhythm drum singer band album concert piano violin note".split()


def test_documents_on_one_topic_cluster_together_and_apart_from_another() -> None:
    rnd = random.Random(0)
    texts, topic = [], []
    for label, vocabulary in enumerate((RIVER, CODE, MUSIC)):
        for _ in range(25):
            texts.append(_topic_text(rnd, vocabulary))
            topic.append(label)
    order = list(range(len(texts)))
    rnd.shuffle(order)
    texts, topic = [texts[i] for i in order], np.array([topic[i] for i in order])
    sig = signatures_from_texts(texts, shingle_config=UNIGRAMS, num_perm=64)
    topics = topic_clusters(sig, num_clusters=3, seed=0)
    assert _same_partition(topics.cluster_id, topic)
    # with more clusters than topics, a cluster never mixes two topics
    finer = topic_clusters(sig, num_clusters=6, seed=0)
    for c in np.unique(finer.cluster_id):
        assert len(np.unique(topic[finer.cluster_id == c])) == 1
    assert np.all(finer.distance[finer.medoids] == 0.0)
    assert np.array_equal(topics.cluster_size, np.bincount(topics.cluster_id)[topics.cluster_id])


def test_junk_sharing_nothing_with_any_topic_has_no_topic_and_no_diversity() -> None:
    rnd = random.Random(7)
    texts = [_topic_text(rnd, v) for v in (RIVER, CODE, MUSIC) for _ in range(10)]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    junk = [
        " ".join("".join(rnd.choice(alphabet) for _ in range(8)) for _ in range(100))
        for _ in range(3)
    ]
    texts += junk
    sig = signatures_from_texts(texts, shingle_config=UNIGRAMS, num_perm=64)
    topics = topic_clusters(sig, num_clusters=6, seed=1)  # seeding likes far points
    junk_rows = np.arange(30, 33)
    assert topics.no_topic.tolist() == [False] * 30 + [True] * 3
    assert not set(topics.medoids.tolist()) & set(junk_rows.tolist())
    assert np.array_equal(topics.cluster_id[junk_rows], junk_rows)
    assert np.all(topics.distance[junk_rows] == 1.0)
    scores = diversity_scores(sig, topics=topics, dup_cluster_size=np.ones(33, np.int64))
    assert np.all(scores.raw[junk_rows] == 0.0) and np.all(scores.raw[:30] > 0.0)


def test_topics_and_scores_do_not_depend_on_input_order_or_threads() -> None:
    rnd = random.Random(4)
    sets = [_topic_doc(rnd, [f"c{i % 5}w{j}" for j in range(80)], "n") for i in range(60)]
    sets += [sets[3], sets[3], sets[10], []]
    scores, topics = _scores(sets, normalize="rank")
    perm = np.random.default_rng(0).permutation(len(sets))
    permuted, permuted_topics = _scores([sets[i] for i in perm], normalize="rank")
    assert _same_partition(topics.cluster_id[perm], permuted_topics.cluster_id)
    assert np.array_equal(topics.distance[perm], permuted_topics.distance)
    assert np.array_equal(scores.diversity[perm], permuted.diversity)
    assert np.array_equal(scores.raw[perm], permuted.raw)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single, _ = _scores(sets, normalize="rank")
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(single.diversity, scores.diversity)


def test_seed_changes_nothing_but_the_start() -> None:
    rnd = random.Random(5)
    sets = [_topic_doc(rnd, [f"c{i % 4}w{j}" for j in range(80)], "n") for i in range(40)]
    sig = signatures_from_shingles(sets, num_perm=64)
    a = topic_clusters(sig, num_clusters=4, seed=0)
    b = topic_clusters(sig, num_clusters=4, seed=9)
    assert _same_partition(a.cluster_id, b.cluster_id)  # four clean topics: one answer


def test_exact_duplicates_score_lower_than_a_unique_document() -> None:
    rnd = random.Random(0)
    sets = [_topic_doc(rnd, [f"t{k % 3}w{i}" for i in range(80)], "n") for k in range(12)]
    sets += [sets[0]] * 3  # document 0 now exists four times
    scores, _ = _scores(sets, num_clusters=3)
    copies = [0, 12, 13, 14]
    assert np.all(scores.raw[copies] == scores.raw[0])
    assert np.all(scores.raw[1:12] > scores.raw[0])
    rank, _ = _scores(sets, num_clusters=3, normalize="rank")
    assert np.all(rank.diversity[1:12] > rank.diversity[0])


def test_well_separated_topic_scores_higher_than_overlapping_topics() -> None:
    rnd = random.Random(2)
    core_a = [f"a{i}" for i in range(80)]
    core_b = core_a[:55] + [f"b{i}" for i in range(25)]  # overlaps a
    core_z = [f"z{i}" for i in range(80)]  # shares nothing
    sets = [
        _topic_doc(rnd, core, tag)
        for core, tag in ((core_a, "x"), (core_b, "y"), (core_z, "z"))
        for _ in range(8)
    ]
    scores, topics = _scores(sets, num_clusters=3)
    assert len(np.unique(topics.cluster_id)) == 3
    assert scores.separation[16:].min() > scores.separation[:16].max()
    assert np.median(scores.raw[16:]) > np.median(scores.raw[:16])


def test_scores_are_float32_in_unit_interval_for_every_normalization() -> None:
    rnd = random.Random(3)
    sets = [_topic_doc(rnd, [f"c{i % 7}w{j}" for j in range(80)], "n") for i in range(40)] + [[]]
    for mode in ("none", "rank", "minmax"):
        scores, topics = _scores(sets, normalize=mode)
        d = scores.diversity
        assert d.dtype == np.float32 and d.min() >= 0.0 and d.max() <= 1.0
        assert d[-1] == d.min() and topics.empty[-1] and topics.cluster_id[-1] == len(sets) - 1


def _stdlib_chunks(count: int, size: int = 3000) -> list[str]:
    chunks: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        chunks.extend(text[i : i + size] for i in range(0, len(text), size))
        if len(chunks) >= count:
            break
    return chunks[:count]


def test_scores_separate_samples_on_real_text() -> None:
    texts = _stdlib_chunks(800)
    assert len(texts) == 800
    topic_sig = signatures_from_texts(texts, shingle_config=UNIGRAMS, num_perm=64)
    dup_sig = signatures_from_texts(texts, shingle_config=ShingleConfig(), num_perm=128)
    dup_id, dup_size = duplicate_clusters(dup_sig, threshold=0.8)
    topics = topic_clusters(topic_sig, seed=0)
    scores = diversity_scores(
        topic_sig, topics=topics, dup_cluster_size=dup_size, dup_cluster_id=dup_id
    )
    _, counts = np.unique(scores.diversity, return_counts=True)
    assert counts.max() / len(texts) < 0.2
    _, sizes = np.unique(topics.cluster_id, return_counts=True)
    assert auto_num_clusters(len(texts)) == 28 and 20 <= len(topics.medoids) <= 28
    assert (sizes == 1).sum() < 0.2 * len(sizes) and sizes.max() < 0.5 * len(texts)


def test_unshared_values_collapse_into_one_and_shared_ones_stay() -> None:
    e, u = 0xFFFFFFFF, UNSHARED_VALUE
    sig = np.array(
        [[1, 2, 3], [1, 5, 3], [1, 2, 3], [7, 8, 9], [e, e, e], [e, e, e]], dtype=np.uint32
    )
    # a value is shared when another row holds it at the same position (copies count)
    expected = [[1, 2, 3], [1, u, 3], [1, 2, 3], [u, u, u], [e, e, e], [e, e, e]]
    collapsed = collapse_unshared_values(sig)
    assert collapsed.dtype == np.uint32 and collapsed.tolist() == expected
    assert sig[0, 1] == 2  # the input is left alone
    perm = np.array([3, 5, 0, 4, 2, 1])
    assert np.array_equal(collapse_unshared_values(sig[perm]), collapsed[perm])
    assert collapse_unshared_values(sig[:0]).shape == (0, 3)
    with pytest.raises(TypeError, match="uint32"):
        collapse_unshared_values(sig.astype(np.int64))


def _random_character_junk(rnd: random.Random, count: int) -> list[str]:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789#$%&*@!"
    return [
        " ".join(
            "".join(rnd.choice(alphabet) for _ in range(rnd.randint(2, 10)))
            for _ in range(rnd.randint(100, 400))
        )
        for _ in range(count)
    ]


def _samplemix_p(texts: list[str], *, collapse: bool) -> np.ndarray:
    """``p`` at alpha 0.8 as a default build computes it (heuristic quality, MinHash topics)."""
    dup_sig = signatures_from_texts(texts, shingle_config=ShingleConfig(), num_perm=128)
    dup_id, dup_size = duplicate_clusters(dup_sig, threshold=0.8)
    topic_sig = signatures_from_texts(texts, shingle_config=UNIGRAMS, num_perm=64)
    if collapse:
        topic_sig = collapse_unshared_values(topic_sig)
    topics = topic_clusters(topic_sig, seed=0)
    diversity = diversity_scores(
        topic_sig, topics=topics, dup_cluster_size=dup_size, dup_cluster_id=dup_id
    ).diversity
    quality = rank_normalize(HeuristicScorer().score(texts, [{}] * len(texts)).quality)
    return samplemix_weights(quality, diversity, 0.8)


@pytest.mark.parametrize("seed", [16, 1])
def test_random_character_junk_lands_in_the_bottom_quartile_of_p(seed: int) -> None:
    """Issue 16's goal on real text (standard-library source) plus 4% generated junk."""
    clean = _stdlib_chunks(600)
    junk = _random_character_junk(random.Random(seed), 24)
    texts = clean + junk
    junk_rows = np.arange(len(clean), len(texts))
    p = _samplemix_p(texts, collapse=True)
    bottom = p <= np.quantile(p, 0.25)
    assert bottom[junk_rows].all(), f"junk in the bottom quartile: {bottom[junk_rows].mean():.0%}"
    # the fixture is a real test: word-set MinHash without the collapse lifts junk out
    uncollapsed = _samplemix_p(texts, collapse=False)
    assert (uncollapsed[junk_rows] > np.quantile(uncollapsed, 0.25)).mean() > 0.5


def test_separation_of_medoids() -> None:
    sig = signatures_from_shingles([[b"a", b"b"], [b"a", b"b", b"c"], [b"x"]], num_perm=64)
    sep = medoid_separation(sig, neighbors=1)
    assert sep[2] == 1.0 and sep[0] == sep[1] < 0.7
    assert medoid_separation(sig[:1]).tolist() == [1.0]
    with pytest.raises(ValueError, match="neighbors"):
        medoid_separation(sig, neighbors=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_clusters": 0}, "num_clusters"),
        ({"num_clusters": 2.5}, "num_clusters"),
        ({"seed": -1}, "seed"),
        ({"max_iter": -1}, "max_iter"),
        ({"candidates": 0}, "candidates"),
    ],
)
def test_invalid_topic_options(kwargs, match) -> None:
    sig = signatures_from_shingles([[b"a"], [b"b"], [b"c"]], num_perm=16)
    with pytest.raises(ValueError, match=match):
        topic_clusters(sig, **kwargs)
    with pytest.raises(TypeError, match="uint32"):
        topic_clusters(sig.astype(np.int64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dup_cluster_size": np.array([1, 1])}, "shape"),
        ({"dup_cluster_size": np.array([0, 1, 1])}, "dup_cluster_size"),
        ({"dup_cluster_id": np.array([0, 5, 2])}, "dup_cluster_id"),
        ({"normalize": "zscore"}, "normalize"),
        ({"neighbors": 0}, "neighbors"),
    ],
)
def test_invalid_inputs(kwargs, match) -> None:
    sig = signatures_from_shingles([[b"a"], [b"b"], [b"c"]], num_perm=16)
    args = {"dup_cluster_size": np.ones(3, np.int64), "topics": topic_clusters(sig)} | kwargs
    with pytest.raises(ValueError, match=match):
        diversity_scores(sig, **args)
