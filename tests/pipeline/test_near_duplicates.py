"""The build's near-duplicate clusters and the diversity they discount (issue 16).

Real text: paragraphs of the standard library's documentation strings and source, so the
vocabulary and word order are those of real documents; the copies are made the way issue
16's benchmark makes them (a few words replaced by new ones).
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from streammix.metadata.clusters import (
    BUILD_FALSE_NEGATIVE_WEIGHT,
    BUILD_FALSE_POSITIVE_WEIGHT,
    build_bands_rows,
    duplicate_clusters,
    exact_jaccard_components,
)
from streammix.metadata.minhash import signatures_from_texts
from streammix.metadata.samplemix import samplemix_weights
from streammix.metadata.shingle import ShingleConfig, shingles
from streammix.pipeline.cluster import topic_columns, vocabulary_duplicates
from streammix.pipeline.config import BuildConfig, DomainSpec

FIVE_GRAMS = ShingleConfig()
UNIGRAMS = ShingleConfig(n=1)
CONFIG = BuildConfig(domains=(DomainSpec(name="web", source="web.jsonl"),), out="unused")


def _stdlib_paragraphs(count: int, min_words: int, max_words: int) -> list[str]:
    """Distinct runs of ``min_words..max_words`` words from standard-library modules."""
    out: list[str] = []
    seen: set[str] = set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        words = path.read_text(encoding="utf-8", errors="replace").split()
        step = max_words
        for i in range(0, len(words) - max_words, step):
            size = min_words + (i // step) % (max_words - min_words + 1)
            text = " ".join(words[i : i + size])
            if text not in seen:
                seen.add(text)
                out.append(text)
            if len(out) >= count:
                return out
    return out


def _edit(text: str, rnd: random.Random, changes: int = 2) -> str:
    words = text.split(" ")
    for _ in range(changes):
        words[rnd.randrange(len(words))] = f"edit{rnd.randrange(10**6)}"
    return " ".join(words)


def _signatures(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return (
        signatures_from_texts(texts, shingle_config=FIVE_GRAMS, num_perm=128),
        signatures_from_texts(texts, shingle_config=UNIGRAMS, num_perm=64),
    )


def _build_duplicates(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dup_id, dup_size, topic signatures)`` exactly as the build computes them."""
    five, topic = _signatures(texts)
    first, _ = duplicate_clusters(
        five,
        threshold=CONFIG.dedup_threshold,
        false_positive_weight=BUILD_FALSE_POSITIVE_WEIGHT,
        false_negative_weight=BUILD_FALSE_NEGATIVE_WEIGHT,
    )
    dup_id, dup_size = vocabulary_duplicates(topic, five, first)
    return dup_id, dup_size, topic


def test_build_band_layout_finds_pairs_at_and_above_the_threshold() -> None:
    for threshold in (0.7, 0.8, 0.9):
        bands, rows = build_bands_rows(threshold, 128)

        def found(s: float, b: int = bands, r: int = rows) -> float:
            return 1.0 - (1.0 - s**r) ** b

        assert found(threshold) > 0.65 and found(min(threshold + 0.08, 0.99)) >= 0.95
        assert found(threshold - 0.2) < 0.15


def test_short_near_copies_are_found() -> None:
    rnd = random.Random(16)
    sources = _stdlib_paragraphs(300, 30, 80)
    copies = [(s, _edit(s, rnd)) for s in rnd.sample(sources, 40)]
    texts = sources + [c for _, c in copies]
    index = {t: i for i, t in enumerate(sources)}
    pairs = [(index[s], len(sources) + k) for k, (s, _) in enumerate(copies)]
    # the fixture is a real test: many of these copies are below 5-gram Jaccard 0.8
    exact = [
        len(a & b) / len(a | b)
        for a, b in (
            (set(shingles(texts[i], FIVE_GRAMS)), set(shingles(texts[j], FIVE_GRAMS)))
            for i, j in pairs
        )
    ]
    assert np.mean(np.array(exact) < 0.8) > 0.3
    dup_id, dup_size, _ = _build_duplicates(texts)
    assert all(dup_id[i] == dup_id[j] for i, j in pairs)
    # and the documents that are not copies of each other stay apart (exact 5-gram
    # Jaccard and shared vocabulary are both far apart for them)
    sets = [set(shingles(t, FIVE_GRAMS)) for t in texts]
    exact_clusters = exact_jaccard_components(sets, 0.5)
    assert len(np.unique(dup_id)) >= len(np.unique(exact_clusters)) - 2


def test_texts_over_one_small_vocabulary_are_not_near_copies() -> None:
    rnd = random.Random(3)
    vocabulary = "river water stone garden winter token matrix violet copper signal".split()
    texts = [" ".join(rnd.choice(vocabulary) for _ in range(rnd.randint(40, 120))) for _ in range(60)]
    dup_id, dup_size, topic = _build_duplicates(texts)
    assert dup_size.max() == 1  # same words, different order: not copies
    # whereas their vocabulary alone would join them all
    assert np.mean([len(set(t.split())) == len(vocabulary) for t in texts]) > 0.9


def test_near_duplicates_do_not_depend_on_input_order() -> None:
    rnd = random.Random(5)
    sources = _stdlib_paragraphs(150, 30, 80)
    texts = sources + [_edit(s, rnd) for s in rnd.sample(sources, 30)]
    dup_id, dup_size, _ = _build_duplicates(texts)
    assert np.any(dup_size > 1)
    perm = np.random.default_rng(0).permutation(len(texts))
    permuted_id, permuted_size, _ = _build_duplicates([texts[i] for i in perm])
    before = dup_id[perm]
    assert np.array_equal(
        before[:, None] == before[None, :], permuted_id[:, None] == permuted_id[None, :]
    )
    assert np.array_equal(dup_size[perm], permuted_size)


def _p(texts: list[str], quality: np.ndarray) -> np.ndarray:
    dup_id, dup_size, topic = _build_duplicates(texts)
    diversity = topic_columns(topic, dup_id, dup_size, CONFIG)["diversity"]
    return samplemix_weights(quality, diversity, 0.8)


@pytest.mark.parametrize("changes", [0, 2])
def test_copies_of_a_high_quality_document_score_lower_p_than_a_unique_one(changes: int) -> None:
    """Three exact (0) or near (2 words changed) copies of each of the 8 most diverse documents."""
    rnd = random.Random(changes)
    clean = _stdlib_paragraphs(400, 60, 200)
    p_clean = _p(clean, np.ones(len(clean)))
    originals = np.argsort(-p_clean)[:8]  # the documents SampleMix values most
    texts = list(clean)
    for row in originals:
        texts += [_edit(clean[row], rnd, changes) for _ in range(3)]
    copies = np.arange(len(clean), len(texts))
    unique = np.setdiff1d(np.arange(len(clean)), originals)
    # the same quality for every document: a copy scores below (nearly) every unique one
    p = _p(texts, np.ones(len(texts)))
    assert p[copies].max() < np.quantile(p[unique], 0.05)
    # copies and originals of the best quality, the rest spread: still the bottom quartile
    quality = np.r_[np.linspace(0.0, 1.0, len(clean)), np.ones(len(copies))]
    quality[originals] = 1.0
    p = _p(texts, quality)
    bottom = p <= np.quantile(p, 0.25)
    assert bottom[copies].all() and bottom[originals].all()
