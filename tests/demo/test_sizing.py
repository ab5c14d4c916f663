"""The demo's thread choice, run sizing, junk domain and first-compile notice."""

from __future__ import annotations

import pytest

from streammix.demo.local_corpus import junk_documents
from streammix.demo.sizing import available_cpus, default_threads, steps_for_budget


@pytest.mark.parametrize(
    ("cpus", "load", "threads"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 1.0, 1), (2, 4.5, 1), (8, 2.2, 6), (1, 0.0, 1), (4, 0.6, 3)],
)
def test_default_threads_takes_the_free_cores(cpus: int, load: float, threads: int) -> None:
    assert default_threads(cpus, load) == threads


def test_default_threads_reads_this_machine() -> None:
    assert 1 <= default_threads() <= available_cpus()
    with pytest.raises(ValueError, match="cpus"):
        default_threads(0, 0.0)
    with pytest.raises(ValueError, match="load"):
        default_threads(2, float("nan"))


def test_steps_for_budget_is_whole_rounds_within_bounds() -> None:
    # 0.1 s a step, 60-step rounds: 120 s hold 20 rounds
    assert steps_for_budget(seconds_per_step=0.1, budget_s=120, round_steps=60, min_rounds=3,
                            max_rounds=40) == 1200
    assert steps_for_budget(seconds_per_step=10.0, budget_s=120, round_steps=60, min_rounds=3,
                            max_rounds=40) == 180
    assert steps_for_budget(seconds_per_step=1e-4, budget_s=120, round_steps=60, min_rounds=3,
                            max_rounds=40) == 2400
    with pytest.raises(ValueError):
        steps_for_budget(seconds_per_step=0.0, budget_s=1, round_steps=1, min_rounds=1,
                         max_rounds=1)


def test_junk_documents_shuffle_real_characters_deterministically() -> None:
    texts = ["def f(x):\n    return x + 1\n", "The quick brown fox jumps over the lazy dog."]
    junk = junk_documents(texts, 5, seed=3)
    assert junk == junk_documents(texts, 5, seed=3)
    assert junk != junk_documents(texts, 5, seed=4)
    for i, doc in enumerate(junk):
        assert sorted(doc) == sorted(texts[i % 2])
    assert junk[1] != texts[1]
    assert junk_documents(texts, 0, seed=0) == []
    with pytest.raises(ValueError, match="non-empty"):
        junk_documents([""], 1, seed=0)
    with pytest.raises(TypeError):
        junk_documents("text", 1, seed=0)


def test_first_compile_notice_only_without_cached_kernels(tmp_path) -> None:
    import numba

    from streammix.demo.numba_cache import cached_kernel_count, first_compile_notice

    module = tmp_path / "smx_kernel_probe.py"
    module.write_text(
        "import numba\n\n@numba.njit(cache=True)\ndef double(x):\n    return 2 * x\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        assert cached_kernel_count(["smx_kernel_probe"]) == 0
        assert "first run only" in first_compile_notice(["smx_kernel_probe"], "a test")
        import smx_kernel_probe

        assert smx_kernel_probe.double(2) == 4
        assert cached_kernel_count(["smx_kernel_probe"]) == 1
        assert first_compile_notice(["smx_kernel_probe"], "a test") is None
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("smx_kernel_probe", None)
    assert numba  # numba is a hard dependency
