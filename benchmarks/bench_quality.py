"""Throughput of the heuristic quality scorer, rank normalization and SampleMix planning.

Measures, on one core and a deterministic synthetic web-like corpus (~2 KB documents: prose,
list pages, boilerplate, repeated spam):

* ``HeuristicScorer.score`` end to end (docs/s), against its peer: the same signals with the
  n-gram statistics computed by the pure-Python reference instead of the numba kernel;
* the two halves separately (string signals; n-gram kernel);
* ``rank_normalize`` and ``samplemix_plan`` on a million samples.

Each measurement is repeated; the table reports medians (and min/max). Usage:

    python3 benchmarks/bench_quality.py            # full run
    python3 benchmarks/bench_quality.py --quick    # a few seconds
    python3 benchmarks/bench_quality.py --goals    # issue 16's goals on real builds
                                                   # (benchmarks/bench_quality_goals.py)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from streammix.metadata.normalize import rank_normalize
from streammix.metadata.quality import HeuristicScorer, heuristic_signals
from streammix.metadata.quality_ngrams import ngram_repetition, ngram_repetition_reference
from streammix.metadata.quality_rules import DEFAULT_RULES, combine
from streammix.metadata.quality_signals import text_signal_matrix
from streammix.metadata.samplemix import SampleMixConfig, samplemix_plan

COMMON = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will more can out some what about into than them only other new time people may "
    "water river city history music school market energy system model data study result"
).split()


def _word(rng: np.random.Generator) -> str:
    if rng.random() < 0.6:
        return COMMON[min(int(rng.zipf(1.3)) - 1, len(COMMON) - 1)]
    syllables = ["ka", "lo", "ten", "mar", "si", "vel", "dor", "an", "ric", "po", "ste", "lun"]
    return "".join(rng.choice(syllables, size=int(rng.integers(1, 4))))


def _sentence(rng: np.random.Generator) -> str:
    words = [_word(rng) for _ in range(int(rng.integers(6, 22)))]
    return " ".join(words).capitalize() + str(rng.choice([".", ".", ".", "?", "!"]))


def make_document(rng: np.random.Generator, target_chars: int = 2000) -> str:
    """One synthetic page: mostly prose, sometimes a list page, boilerplate or spam."""
    kind = rng.random()
    parts: list[str] = []
    while sum(map(len, parts)) < target_chars:
        if kind < 0.7:
            parts.append(" ".join(_sentence(rng) for _ in range(int(rng.integers(2, 6)))))
        elif kind < 0.85:
            parts.append("• " + " ".join(_word(rng) for _ in range(int(rng.integers(2, 6)))))
        elif kind < 0.95:
            parts.append(str(rng.choice(["Home", "Contact us", "Privacy policy", "Login"])))
        else:
            parts.append("Buy cheap shoes online today, best price guaranteed!")
    return "\n".join(parts)


def make_corpus(n_docs: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [make_document(rng) for _ in range(n_docs)]


def timed(function: Callable[[], object], repeats: int) -> list[tuple[float, float]]:
    """``(wall seconds, CPU seconds of this process)`` per repeat, after one warm-up call."""
    function()  # warm-up (numba compilation, caches)
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def reference_heuristic(texts: list[str]) -> np.ndarray:
    """Peer: the same score with the n-gram statistics from the pure-Python reference."""
    rows, words = text_signal_matrix(texts)
    top = np.zeros((len(texts), 3))
    dup = np.zeros((len(texts), 6))
    for k, w in enumerate(words):
        top[k], dup[k] = ngram_repetition_reference(w.ids, w.lengths, len(texts[k]))
    signals = heuristic_signals(texts[:1])  # only for the column names
    columns = np.concatenate([rows, top, dup], axis=1)
    return combine({name: columns[:, i] for i, name in enumerate(signals)}, DEFAULT_RULES)


def _row(name: str, times: list[tuple[float, float]], items: int, unit: str) -> str:
    walls = [w for w, _ in times]
    cpu = statistics.median(c for _, c in times)
    wall = statistics.median(walls)
    return (
        f"| {name} | {items / cpu:,.0f} | {items / wall:,.0f} | {wall * 1e3:,.1f} ms | "
        f"{min(walls) * 1e3:,.1f} / {max(walls) * 1e3:,.1f} ms |"
    )


def _header(unit: str) -> str:
    return (
        f"| what | {unit} per CPU-second | {unit}/s (wall) | median wall | min / max wall |\n"
        "|---|---|---|---|---|"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, two repeats")
    parser.add_argument("--docs", type=int, default=4000, help="documents per scoring run")
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples for SampleMix")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--goals", action="store_true", help="run bench_quality_goals.py (its own options)"
    )
    if "--goals" in sys.argv[1:]:
        import bench_quality_goals

        bench_quality_goals.main([a for a in sys.argv[1:] if a != "--goals"])
        return
    args = parser.parse_args()
    docs, samples, repeats = args.docs, args.samples, args.repeats
    if args.quick:
        docs, samples, repeats = 500, 100_000, 2

    texts = make_corpus(docs)
    records = [{}] * docs
    scorer = HeuristicScorer()
    fast_scores = scorer.score(texts, records).quality
    peer_scores = reference_heuristic(texts)
    assert np.array_equal(fast_scores, peer_scores), "kernel and reference disagree"
    rows, words = text_signal_matrix(texts)
    ids, lengths, chars = [w.ids for w in words], [w.lengths for w in words], list(map(len, texts))

    results = {
        "HeuristicScorer.score (numba n-grams)": timed(
            lambda: scorer.score(texts, records), repeats
        ),
        "peer: same, pure-Python n-grams": timed(lambda: reference_heuristic(texts), repeats),
        "  string signals only": timed(lambda: text_signal_matrix(texts), repeats),
        "  n-gram kernel only": timed(lambda: ngram_repetition(ids, lengths, chars), repeats),
    }
    mean_chars = statistics.mean(chars)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {docs} docs, mean {mean_chars:,.0f} chars"
    )
    print(_header("docs"))
    for name, times in results.items():
        print(_row(name, times, docs, "docs"))
    fast = statistics.median(c for _, c in results["HeuristicScorer.score (numba n-grams)"])
    peer = statistics.median(c for _, c in results["peer: same, pure-Python n-grams"])
    print(f"\nspeed-up of the scorer over its peer (median CPU time): {peer / fast:.2f}x")

    rng = np.random.default_rng(1)
    quality, diversity = rng.random(samples), rng.random(samples)
    tokens, domains = rng.integers(50, 4000, samples), rng.integers(0, 8, samples)
    budget = int(tokens.sum() * 2)

    def plan(**options):
        config = SampleMixConfig(token_budget=budget, **options)
        return samplemix_plan(
            quality=quality,
            diversity=diversity,
            num_tokens=tokens,
            domain_ids=domains,
            config=config,
        )

    planning = {
        "rank_normalize": timed(lambda: rank_normalize(quality), repeats),
        "samplemix_plan systematic": timed(plan, repeats),
        "samplemix_plan seeded": timed(lambda: plan(rounding="seeded"), repeats),
        "samplemix_plan + caps (R=4, share 0.2)": timed(
            lambda: plan(max_repeats_per_sample=4, max_domain_share=0.2), repeats
        ),
    }
    print(f"\n{samples:,} samples, 8 domains, budget = 2x the tokens")
    print(_header("samples"))
    for name, times in planning.items():
        print(_row(name, times, samples, "samples"))


if __name__ == "__main__":
    main()
