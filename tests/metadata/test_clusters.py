"""LSH clusters: datasketch's parameters and clusters, exact-Jaccard agreement, invariances."""

import random
import tracemalloc

import numpy as np
import pytest
from datasketch import MinHashLSH
from datasketch.lsh import _optimal_param

from streammix.metadata.clusters import (
    duplicate_clusters,
    exact_jaccard_components,
    lsh_bands_rows,
    lsh_components,
    merge_partitions,
)
from streammix.metadata.minhash import (
    is_empty_signature,
    signatures_from_shingles,
    signatures_from_texts,
    to_lean_minhashes,
)
from streammix.metadata.shingle import ShingleConfig, shingles


def _corpus(seed: int, num_base: int = 300, max_copies: int = 3, max_edits: int = 6) -> list[str]:
    """Random documents plus near-copies with a few word substitutions, shuffled."""
    rnd = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    texts = []
    for _ in range(num_base):
        doc = [rnd.choice(words) for _ in range(rnd.randrange(30, 150))]
        texts.append(" ".join(doc))
        for _ in range(rnd.randrange(0, max_copies + 1)):
            copy = list(doc)
            for _ in range(rnd.randrange(0, max_edits + 1)):
                copy[rnd.randrange(len(copy))] = rnd.choice(words)
            texts.append(" ".join(copy))
    rnd.shuffle(texts)
    return texts


def _datasketch_clusters(signatures: np.ndarray, threshold: float) -> np.ndarray:
    """Clusters built the datasketch way: index everything, query everything, merge answers."""
    lsh = MinHashLSH(threshold=threshold, num_perm=signatures.shape[1])
    lean = to_lean_minhashes(signatures)
    active = ~is_empty_signature(signatures)
    for i in np.flatnonzero(active):
        lsh.insert(int(i), lean[i])
    parent = list(range(len(lean)))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for i in np.flatnonzero(active):
        for j in lsh.query(lean[i]):
            a, b = find(int(i)), find(j)
            parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(len(lean))], dtype=np.int64)


@pytest.mark.parametrize("num_perm", [16, 64, 128])
def test_bands_rows_equal_datasketch(num_perm: int) -> None:
    for threshold in np.round(np.arange(0.1, 1.0, 0.1), 2):
        assert lsh_bands_rows(float(threshold), num_perm) == _optimal_param(
            float(threshold), num_perm, 0.5, 0.5
        )
    assert lsh_bands_rows(0.7, num_perm, false_positive_weight=0.3, false_negative_weight=0.7) == (
        _optimal_param(0.7, num_perm, 0.3, 0.7)
    )


@pytest.mark.slow
def test_bands_rows_equal_datasketch_full_grid() -> None:
    for num_perm in [2, 8, 32, 100, 128, 256]:
        for threshold in np.round(np.arange(0.02, 1.0, 0.02), 2):
            assert lsh_bands_rows(float(threshold), num_perm) == _optimal_param(
                float(threshold), num_perm, 0.5, 0.5
            )


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_clusters_equal_datasketch_lsh(threshold: float) -> None:
    texts = _corpus(1) + ["", ""]
    sig = signatures_from_texts(texts, shingle_config=ShingleConfig())
    cluster_id, cluster_size = duplicate_clusters(sig, threshold=threshold)
    assert np.array_equal(cluster_id, _datasketch_clusters(sig, threshold))
    assert np.array_equal(cluster_size, np.bincount(cluster_id, minlength=len(texts))[cluster_id])


def test_clusters_match_exact_jaccard_when_separated() -> None:
    # Copies differ from their source by one substitution in >= 60 words (J >= 0.8, and
    # J >= 0.65 between two copies); unrelated documents have J ~ 0. With the threshold at
    # 0.5 every pair is far from it, so LSH must reproduce the exact grouping.
    rnd = random.Random(2)
    words = [f"w{i}" for i in range(5000)]
    texts = []
    for _ in range(150):
        doc = [rnd.choice(words) for _ in range(rnd.randrange(60, 120))]
        texts.append(" ".join(doc))
        for _ in range(rnd.randrange(0, 3)):
            copy = list(doc)
            copy[rnd.randrange(len(copy))] = rnd.choice(words)
            texts.append(" ".join(copy))
    sets = [set(shingles(t, ShingleConfig())) for t in texts]
    sig = signatures_from_texts(texts, shingle_config=ShingleConfig())
    cluster_id, _ = duplicate_clusters(sig, threshold=0.5)
    assert np.array_equal(cluster_id, exact_jaccard_components(sets, 0.5))


def test_clusters_agree_with_exact_jaccard_within_lsh_error() -> None:
    texts = _corpus(3, num_base=120, max_edits=12)
    sets = [set(shingles(t, ShingleConfig())) for t in texts]
    sig = signatures_from_texts(texts, shingle_config=ShingleConfig())
    cluster_id, _ = duplicate_clusters(sig, threshold=0.6)
    exact = exact_jaccard_components(sets, 0.6)
    same_lsh = cluster_id[:, None] == cluster_id[None, :]
    same_exact = exact[:, None] == exact[None, :]
    jac = np.array([[len(a & b) / max(1, len(a | b)) for b in sets] for a in sets])
    assert np.mean(same_lsh == same_exact) > 0.995
    assert np.all(same_lsh[jac >= 0.85])  # far above the threshold: always found
    assert not np.any(same_lsh[(jac < 0.2) & ~same_exact])  # far below: never merged


def test_cluster_id_is_smallest_member_and_partition_ignores_input_order() -> None:
    texts = _corpus(4)
    sig = signatures_from_texts(texts, shingle_config=ShingleConfig())
    cluster_id, cluster_size = duplicate_clusters(sig, threshold=0.7)
    for c in np.unique(cluster_id):
        members = np.flatnonzero(cluster_id == c)
        assert members.min() == c and cluster_size[members[0]] == len(members)
    assert np.any(cluster_size > 1)
    perm = np.random.default_rng(0).permutation(len(texts))
    permuted_id, permuted_size = duplicate_clusters(sig[perm], threshold=0.7)
    # Same partition: i and j together before iff together after.
    before = cluster_id[perm]
    assert np.array_equal(
        before[:, None] == before[None, :], permuted_id[:, None] == permuted_id[None, :]
    )
    assert np.array_equal(cluster_size[perm], permuted_size)


def test_cross_domain_duplicates_are_found() -> None:
    domain_a = ["the cat sat on the mat and looked at the dog for a while"] + _corpus(5, 20)
    domain_b = _corpus(6, 20) + ["The cat sat on the mat, and looked at the dog for a while!"]
    sig = signatures_from_texts(domain_a + domain_b, shingle_config=ShingleConfig())
    cluster_id, cluster_size = duplicate_clusters(sig)
    assert cluster_id[-1] == 0 and cluster_size[0] == 2


def test_empty_documents_are_singletons_or_together() -> None:
    sig = signatures_from_shingles([[], [b"a b c"], [], [b"a b c"], []])
    assert duplicate_clusters(sig)[0].tolist() == [0, 1, 2, 1, 4]
    assert duplicate_clusters(sig, empty_documents="together")[0].tolist() == [0, 1, 0, 1, 0]


def test_band_by_band_chunks_and_memmap_give_the_same_clusters(tmp_path) -> None:
    texts = _corpus(7, num_base=200)
    sig = signatures_from_texts(texts, shingle_config=ShingleConfig())
    expected = duplicate_clusters(sig, threshold=0.7)
    path = tmp_path / "signatures.u32"
    disk = np.memmap(path, dtype=np.uint32, mode="w+", shape=sig.shape)
    disk[:] = sig
    disk.flush()
    on_disk = np.memmap(path, dtype=np.uint32, mode="r", shape=sig.shape)
    for chunk_rows in (1, 7, 100):
        got = duplicate_clusters(on_disk, threshold=0.7, chunk_rows=chunk_rows)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_clustering_memory_is_linear_per_band(tmp_path) -> None:
    """Reduced-scale check of the memory claim: besides the (memory-mapped) signatures, the
    clustering allocates O(N) bytes, not O(N * bands) or O(N * num_perm)."""
    n, num_perm = 50_000, 128
    rng = np.random.default_rng(0)
    path = tmp_path / "sig.u32"
    disk = np.memmap(path, dtype=np.uint32, mode="w+", shape=(n, num_perm))
    disk[:] = rng.integers(0, 2**32 - 1, size=(n, num_perm), dtype=np.uint32)
    disk.flush()
    on_disk = np.memmap(path, dtype=np.uint32, mode="r", shape=(n, num_perm))
    duplicate_clusters(on_disk[:100], threshold=0.8)  # compile outside the measurement
    tracemalloc.start()
    duplicate_clusters(on_disk, threshold=0.8, chunk_rows=4096)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 48 * n + 4096 * num_perm * 4, peak  # signatures alone would be 512 * n


def test_min_similarity_verifies_against_the_leader_and_ignores_order() -> None:
    texts = _corpus(8, num_base=80, max_edits=30)
    sig = signatures_from_texts(texts, shingle_config=ShingleConfig(n=1))
    bands, rows = lsh_bands_rows(0.5, 128)
    verified, verified_size = lsh_components(sig, bands=bands, rows=rows, min_similarity=0.5)
    unverified, _ = lsh_components(sig, bands=bands, rows=rows)
    assert len(np.unique(verified)) >= len(np.unique(unverified))
    perm = np.random.default_rng(1).permutation(len(texts))
    permuted_id, _ = lsh_components(sig[perm], bands=bands, rows=rows, min_similarity=0.5)
    before = verified[perm]
    assert np.array_equal(
        before[:, None] == before[None, :], permuted_id[:, None] == permuted_id[None, :]
    )
    assert np.array_equal(verified_size, np.bincount(verified, minlength=len(texts))[verified])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda s: duplicate_clusters(s, threshold=1.5), ValueError, "threshold"),
        (lambda s: duplicate_clusters(s, threshold="high"), TypeError, "threshold"),
        (lambda s: duplicate_clusters(s.astype(np.int64)), TypeError, "uint32"),
        (lambda s: duplicate_clusters(s[0]), ValueError, "2-D"),
        (lambda s: duplicate_clusters(s, empty_documents="drop"), ValueError, "empty_documents"),
        (lambda s: duplicate_clusters(s, chunk_rows=0), ValueError, "chunk_rows"),
        (lambda s: lsh_components(s, bands=20, rows=10), ValueError, "bands"),
        (lambda s: lsh_bands_rows(0.5, 0), ValueError, "num_perm"),
        (lambda s: lsh_bands_rows(0.5, 8, false_positive_weight=2.0), ValueError, "weight"),
    ],
)
def test_invalid_inputs(call, error, match) -> None:
    sig = signatures_from_shingles([[b"a"], [b"b"]])
    with pytest.raises(error, match=match):
        call(sig)


def test_merge_partitions_is_the_union_of_the_partitions_graphs() -> None:
    rng = np.random.default_rng(4)
    n = 60
    first = rng.integers(0, 25, size=n)
    second = rng.integers(0, 40, size=n)
    # brute force: i ~ j when some chain of "same label in first or in second" links them
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for labels in (first, second):
        for i in range(n):
            for j in range(n):
                if labels[i] == labels[j]:
                    ri, rj = find(i), find(j)
                    parent[max(ri, rj)] = min(ri, rj)
    expected = np.array([find(i) for i in range(n)])
    # the inputs as cluster ids (smallest member), as duplicate_clusters returns them
    as_ids = [
        np.array([np.flatnonzero(labels == labels[i]).min() for i in range(n)])
        for labels in (first, second)
    ]
    cluster_id, cluster_size = merge_partitions(*as_ids)
    assert np.array_equal(cluster_id, expected)
    assert np.array_equal(cluster_size, np.bincount(expected, minlength=n)[expected])
    assert np.array_equal(merge_partitions(as_ids[1], as_ids[0])[0], expected)
    with pytest.raises(ValueError, match="row indices"):
        merge_partitions(as_ids[0], np.full(n, n))
    with pytest.raises(ValueError, match="at least one"):
        merge_partitions()


def test_candidates_can_be_confirmed_by_other_signatures() -> None:
    # rows 0, 1 agree on both signatures; rows 2, 3 only on the candidate signatures
    candidate = np.array([[1, 2, 3, 4]] * 2 + [[9, 9, 9, 9]] * 2, dtype=np.uint32)
    confirm = np.array([[5, 6, 7, 8], [5, 6, 7, 0], [1, 1, 1, 1], [2, 2, 2, 2]], dtype=np.uint32)
    cluster_id, _ = lsh_components(
        candidate, bands=2, rows=2, min_similarity=0.7, verify_signatures=confirm
    )
    assert cluster_id.tolist() == [0, 0, 2, 3]
    assert lsh_components(candidate, bands=2, rows=2)[0].tolist() == [0, 0, 2, 2]
    with pytest.raises(ValueError, match="rows"):
        lsh_components(
            candidate, bands=2, rows=2, min_similarity=0.5, verify_signatures=confirm[:2]
        )
