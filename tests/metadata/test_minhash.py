"""MinHash signatures: bit-identity with datasketch, the fast scheme, texts, interop, errors."""

import hashlib
import importlib
import inspect
import random

import numba
import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.metadata.hashing import (
    fast_hash64_array,
    fast_hash64_reference,
    sha1_32_array,
    sha1_32_reference,
)
from streammix.metadata.minhash import (
    EMPTY_VALUE,
    SCHEMES,
    is_empty_signature,
    signatures_from_shingles,
    signatures_from_texts,
    signatures_from_texts_reference,
    signatures_reference,
    to_lean_minhashes,
)
from streammix.metadata.shingle import ShingleConfig, shingles


def _datasketch(shingle_sets, num_perm: int, seed: int, scheme: str) -> np.ndarray:
    rows = []
    for doc in shingle_sets:
        m = MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
        m.update_batch(doc)
        rows.append(m.hashvalues)
    return np.array(rows).reshape(len(shingle_sets), num_perm)


def _generated_sets(seed: int, count: int = 60) -> list[list[bytes]]:
    rnd = random.Random(seed)
    sets = [
        [rnd.randbytes(rnd.randrange(0, 140)) for _ in range(rnd.randrange(0, 40))]
        for _ in range(count)
    ]
    return sets + [[], [b""], [b"x"], [b"a" * 55], [b"a" * 56], [b"b" * 120], [b"dup", b"dup"]]


STDLIB_MODULES = [
    "argparse",
    "asyncio",
    "collections",
    "csv",
    "dataclasses",
    "decimal",
    "email",
    "fractions",
    "functools",
    "heapq",
    "http.client",
    "inspect",
    "itertools",
    "json",
    "logging",
    "pathlib",
    "pickle",
    "random",
    "re",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "zipfile",
]


def _real_documents() -> list[str]:
    """Real English prose: docstrings of standard-library modules and their public members."""
    docs = []
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        docs.append(inspect.getdoc(module) or "")
        for attr in sorted(dir(module))[:15]:
            doc = inspect.getdoc(getattr(module, attr, None))
            if doc and not attr.startswith("_"):
                docs.append(doc)
    return docs


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("seed", [1, 7, 2**32 - 1])
@pytest.mark.parametrize("num_perm", [1, 2, 64, 128, 256])
def test_bit_identical_to_datasketch_on_generated_sets(
    scheme: str, seed: int, num_perm: int
) -> None:
    sets = _generated_sets(seed % 1000)
    ours = signatures_from_shingles(sets, num_perm=num_perm, seed=seed, scheme=scheme)
    assert ours.dtype == np.uint32 and ours.shape == (len(sets), num_perm)
    assert np.array_equal(ours, _datasketch(sets, num_perm, seed, scheme))


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("config", [ShingleConfig(), ShingleConfig(unit="char", n=5)])
def test_bit_identical_to_datasketch_on_real_documents(scheme: str, config: ShingleConfig) -> None:
    texts = _real_documents()
    sets = [shingles(t, config) for t in texts]
    expected = _datasketch(sets, 128, 42, scheme)
    assert np.array_equal(signatures_from_shingles(sets, 128, 42, scheme), expected)
    got = signatures_from_texts(texts, shingle_config=config, num_perm=128, seed=42, scheme=scheme)
    assert np.array_equal(got, expected)


def test_empty_set_is_all_max_like_datasketch() -> None:
    for scheme in SCHEMES:
        sig = signatures_from_shingles([[], [b"a"]], num_perm=8, scheme=scheme)
        assert np.all(sig[0] == EMPTY_VALUE)
        assert is_empty_signature(sig).tolist() == [True, False]
    assert np.array_equal(signatures_from_shingles([], num_perm=4), np.zeros((0, 4), np.uint32))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_kernels_match_the_python_reference(scheme: str) -> None:
    sets = _generated_sets(3, count=25)
    expected = signatures_reference(sets, num_perm=16, seed=5, scheme=scheme)
    assert np.array_equal(signatures_from_shingles(sets, 16, 5, scheme), expected)


def test_fast_scheme_is_not_datasketch_but_estimates_jaccard() -> None:
    a = [f"w{i}".encode() for i in range(300)]
    b = a[:200] + [f"v{i}".encode() for i in range(100)]  # Jaccard 0.5
    sig = signatures_from_shingles([a, b], num_perm=256, scheme="fast")
    assert not np.array_equal(sig, signatures_from_shingles([a, b], num_perm=256))
    assert abs(np.mean(sig[0] == sig[1]) - 0.5) < 0.1


def test_sha1_kernel_equals_hashlib_for_all_lengths() -> None:
    rnd = random.Random(0)
    messages = [rnd.randbytes(n) for n in range(0, 260)] + [b"a" * 55, b"a" * 64, b"\xff" * 119]
    expected = [int.from_bytes(hashlib.sha1(m).digest()[:4], "little") for m in messages]
    assert sha1_32_array(messages).tolist() == expected
    assert [sha1_32_reference(m) for m in messages] == expected


def test_fast_hash_kernel_equals_reference() -> None:
    rnd = random.Random(1)
    messages = [rnd.randbytes(n) for n in range(0, 70)]
    assert [int(h) for h in fast_hash64_array(messages)] == [
        fast_hash64_reference(m) for m in messages
    ]
    assert len(set(fast_hash64_array([b"", b"\0", b"\0\0"]).tolist())) == 3


CONFIGS = st.builds(
    ShingleConfig,
    unit=st.sampled_from(["word", "char"]),
    n=st.integers(1, 5),
    punctuation=st.sampled_from(["keep", "remove", "space"]),
    short_documents=st.sampled_from(["whole", "drop"]),
)
TEXTS = st.lists(st.text(alphabet=st.sampled_from(list("abc d,.É日\n")), max_size=40), max_size=6)


@settings(max_examples=60, deadline=None)
@given(texts=TEXTS, config=CONFIGS, scheme=st.sampled_from(SCHEMES), seed=st.integers(0, 2**32 - 1))
def test_texts_path_equals_shingles_path(texts, config, scheme, seed) -> None:
    got = signatures_from_texts(texts, shingle_config=config, num_perm=8, seed=seed, scheme=scheme)
    expected = signatures_from_texts_reference(
        texts, shingle_config=config, num_perm=8, seed=seed, scheme=scheme
    )
    assert np.array_equal(got, expected)


def test_results_do_not_depend_on_thread_count() -> None:
    texts = _real_documents()
    config = ShingleConfig()
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = signatures_from_texts(texts, shingle_config=config, scheme="fast")
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = signatures_from_texts(texts, shingle_config=config, scheme="fast")
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, many)


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_lean_minhashes_interoperate_with_datasketch(scheme: str) -> None:
    texts = _real_documents()[:40]
    texts.append(texts[0] + " one more sentence")
    sets = [shingles(t, ShingleConfig()) for t in texts]
    sig = signatures_from_shingles(sets, num_perm=64, seed=3, scheme=scheme)
    lean = to_lean_minhashes(sig, seed=3, scheme=scheme)
    reference = MinHash(num_perm=64, seed=3, scheme=scheme)
    reference.update_batch(sets[0])
    assert lean[0].jaccard(reference) == 1.0
    assert lean[0].scheme == scheme and np.array_equal(lean[0].hashvalues, reference.hashvalues)
    lsh = MinHashLSH(threshold=0.5, num_perm=64)
    for i, m in enumerate(lean):
        lsh.insert(i, m)
    assert len(texts) - 1 in lsh.query(lean[0])


def test_lean_minhashes_reject_fast_scheme_and_bad_arrays() -> None:
    sig = signatures_from_shingles([[b"a"]], num_perm=4, scheme="fast")
    with pytest.raises(ValueError, match="datasketch-compatible"):
        to_lean_minhashes(sig, scheme="fast")
    with pytest.raises(ValueError, match="2-D uint32"):
        to_lean_minhashes(sig.astype(np.int64))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scheme": "affine64"}, ValueError, "scheme"),
        ({"num_perm": 0}, ValueError, "num_perm"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**32}, ValueError, "seed"),
    ],
)
def test_invalid_parameters(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        signatures_from_shingles([[b"a"]], **kwargs)


def test_invalid_shingle_inputs() -> None:
    with pytest.raises(TypeError, match="sequences of bytes"):
        signatures_from_shingles(b"abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of bytes"):
        signatures_from_shingles([b"abc"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be bytes"):
        signatures_from_shingles([["text"]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="ShingleConfig"):
        signatures_from_texts(["a"], shingle_config={"n": 5})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be str"):
        signatures_from_texts([b"a"], shingle_config=ShingleConfig())  # type: ignore[list-item]
