import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streammix.core import rng


@settings(deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_mix64_numba_matches_reference(x: int) -> None:
    assert int(rng.mix64_nb(np.uint64(x))) == rng.mix64(x)


@settings(deadline=None)
@given(st.integers(0, 2**63 - 1), st.lists(st.integers(0, 2**62), max_size=4))
def test_fold_matches_derive_key(seed: int, parts: list[int]) -> None:
    key = np.uint64(rng.mix64(seed))
    for p in parts:
        key = np.uint64(rng.fold_nb(key, np.int64(p)))
    assert int(key) == rng.derive_key(seed, *parts)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**64 - 1))
def test_permutation_is_a_bijection_and_kernel_matches_reference(size: int, key: int) -> None:
    half = rng.feistel_half_bits(size)
    fast = [rng.permute_index_nb(i, size, np.uint64(key), half) for i in range(size)]
    assert sorted(fast) == list(range(size))
    for i in range(0, size, max(1, size // 17)):
        assert rng.permute_index_reference(i, size, key) == fast[i]


def test_uniform_in_unit_interval() -> None:
    values = [rng.uniform01(k) for k in range(10000)]
    assert 0.0 <= min(values) and max(values) < 1.0
    assert abs(np.mean(values) - 0.5) < 0.02


def test_negative_seed_rejected() -> None:
    import pytest

    with pytest.raises(ValueError, match="non-negative"):
        rng.derive_key(-1)
