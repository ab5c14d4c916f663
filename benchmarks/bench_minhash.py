"""MinHash and LSH clustering: streammix against datasketch on the same shingle sets.

Measured in one run (medians of ``--repeats``):

* signatures from shingle sets (``List[List[bytes]]``): ``datasketch.MinHash.update_batch``
  (one ``MinHash`` per document, same scheme) against ``signatures_from_shingles`` on one
  numba thread and on all of them; schemes ``affine32``, ``legacy`` and streammix's ``fast``
  (compared with datasketch's default ``affine32``);
* end to end from raw text: Python shingling + ``update_batch`` against
  ``signatures_from_texts``;
* clustering the same signatures: ``datasketch.MinHashLSH`` (insert all, query all, union the
  answers) against ``duplicate_clusters``; the partitions are checked to be identical;
* ``rensa`` if it is importable (it is not installed in the reference environment);
* ``--memory-docs N``: peak RSS of clustering N synthetic signatures, in a fresh process.

Run ``python3 benchmarks/bench_minhash.py --help``; ``--quick`` is a smoke test.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import numba
import numpy as np

from streammix.metadata.clusters import duplicate_clusters, lsh_bands_rows
from streammix.metadata.minhash import (
    signatures_from_shingles,
    signatures_from_texts,
    to_lean_minhashes,
)
from streammix.metadata.shingle import ShingleConfig, shingles


def make_corpus(num_docs: int, seed: int) -> list[str]:
    """Zipf-distributed words, 50-400 words per document, 10% near-copies (a few edits)."""
    rng = np.random.default_rng(seed)
    rnd = random.Random(seed)
    vocabulary = np.array([f"w{i}" for i in range(50_000)])
    texts: list[str] = []
    while len(texts) < num_docs:
        if texts and rnd.random() < 0.1:
            words = rnd.choice(texts).split(" ")
            for _ in range(rnd.randrange(1, 5)):
                words[rnd.randrange(len(words))] = str(vocabulary[rng.integers(len(vocabulary))])
        else:
            ids = np.minimum(rng.zipf(1.2, size=rnd.randrange(50, 400)) - 1, len(vocabulary) - 1)
            words = vocabulary[ids].tolist()
        texts.append(" ".join(words))
    return texts


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and median process CPU seconds of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def datasketch_signatures(shingle_sets, scheme: str, num_perm: int) -> None:
    from datasketch import MinHash

    for doc in shingle_sets:
        m = MinHash(num_perm=num_perm, scheme=scheme)
        m.update_batch(doc)


def datasketch_clusters(lean: list, threshold: float, num_perm: int) -> np.ndarray:
    """Index every sketch, query every sketch, union the answers (cluster id = smallest id)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    for i, m in enumerate(lean):
        lsh.insert(i, m, check_duplication=False)
    parent = list(range(len(lean)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(lean):
        for j in lsh.query(m):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(len(lean))], dtype=np.int64)


def with_threads(n: int, fn):
    def run():
        before = numba.get_num_threads()
        numba.set_num_threads(n)
        try:
            return fn()
        finally:
            numba.set_num_threads(before)

    return run


def bench_signatures(texts, sets, args, rows: list) -> None:
    config = ShingleConfig()
    num_shingles = sum(map(len, sets))
    all_threads = numba.config.NUMBA_NUM_THREADS
    for scheme in ("affine32", "legacy", "fast"):  # warm up (compile or load the cache)
        signatures_from_shingles(sets[:10], args.num_perm, scheme=scheme)
        signatures_from_texts(
            texts[:10], shingle_config=config, num_perm=args.num_perm, scheme=scheme
        )
    base = {}
    for scheme in ("affine32", "legacy"):
        base[scheme] = median_time(
            lambda s=scheme: datasketch_signatures(sets, s, args.num_perm), args.repeats
        )
        rows.append(
            ("shingles", f"datasketch update_batch ({scheme})", 1, base[scheme], base[scheme])
        )
    base["fast"] = base["affine32"]
    if args.rensa:
        bench_rensa(sets, args, rows, base["affine32"])
    for scheme in ("affine32", "legacy", "fast"):
        for threads in (1, all_threads):
            run = with_threads(
                threads, lambda s=scheme: signatures_from_shingles(sets, args.num_perm, scheme=s)
            )
            rows.append(
                (
                    "shingles",
                    f"streammix ({scheme})",
                    threads,
                    median_time(run, args.repeats),
                    base[scheme],
                )
            )
    e2e = median_time(
        lambda: datasketch_signatures(
            [shingles(t, config) for t in texts], "affine32", args.num_perm
        ),
        args.repeats,
    )
    rows.append(("raw text", "datasketch: shingles() + update_batch (affine32)", 1, e2e, e2e))
    for scheme in ("affine32", "legacy", "fast"):
        for threads in (1, all_threads):
            run = with_threads(
                threads,
                lambda s=scheme: signatures_from_texts(
                    texts, shingle_config=config, num_perm=args.num_perm, scheme=s
                ),
            )
            rows.append(
                (
                    "raw text",
                    f"streammix signatures_from_texts ({scheme})",
                    threads,
                    median_time(run, args.repeats),
                    e2e,
                )
            )
    print(
        f"{len(texts)} documents, {num_shingles} shingles ({num_shingles / len(texts):.0f} per document)"
    )


def bench_rensa(sets, args, rows, baseline: float) -> None:
    try:
        import rensa  # noqa: F401
    except ImportError:
        print("rensa: not installed, skipped")
        return
    from rensa import RMinHash

    def run():
        for doc in sets:
            m = RMinHash(num_perm=args.num_perm, seed=1)
            m.update([s.decode("utf-8", "replace") for s in doc])

    rows.append(
        (
            "shingles",
            "rensa RMinHash (not datasketch-compatible)",
            1,
            median_time(run, args.repeats),
            baseline,
        )
    )


def bench_clusters(texts, args, rows: list) -> None:
    signatures = signatures_from_texts(
        texts, shingle_config=ShingleConfig(), num_perm=args.num_perm
    )
    duplicate_clusters(signatures[:100], threshold=args.threshold)  # warm up
    ours: list[np.ndarray] = []
    theirs: list[np.ndarray] = []
    lean = to_lean_minhashes(signatures)  # not timed: a datasketch user already has sketches
    t_theirs = median_time(
        lambda: theirs.append(datasketch_clusters(lean, args.threshold, args.num_perm)),
        args.repeats,
    )
    rows.append(
        (
            "clusters",
            f"datasketch MinHashLSH insert+query+union (t={args.threshold})",
            1,
            t_theirs,
            t_theirs,
        )
    )
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        run = with_threads(
            threads,
            lambda: ours.append(duplicate_clusters(signatures, threshold=args.threshold)[0]),
        )
        rows.append(
            (
                "clusters",
                "streammix duplicate_clusters",
                threads,
                median_time(run, args.repeats),
                t_theirs,
            )
        )
    same = all(np.array_equal(o, theirs[0]) for o in ours)
    bands, rows_per_band = lsh_bands_rows(args.threshold, args.num_perm)
    print(
        f"clusters: bands={bands} rows={rows_per_band}, {len(np.unique(ours[0]))} clusters, "
        f"identical to datasketch: {same}"
    )
    if not same:
        raise SystemExit("cluster mismatch with datasketch")


def peak_rss_kib() -> int:
    """``VmHWM`` of this process (``ru_maxrss`` would include the parent's peak at fork)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1])


def memory_child(num_docs: int, num_perm: int) -> None:
    """Peak RSS of synthetic signatures (5% duplicated rows) plus their clustering."""
    duplicate_clusters(np.zeros((10, num_perm), np.uint32), threshold=0.8)  # compile/load
    baseline = peak_rss_kib()
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32 - 1, size=(num_docs, num_perm), dtype=np.uint32)
    half = max(1, num_docs // 40)
    copies = rng.integers(0, num_docs, size=2 * half)
    signatures[copies[:half]] = signatures[copies[half:]]
    after_signatures = peak_rss_kib()
    start = time.perf_counter()
    duplicate_clusters(signatures, threshold=0.8)
    elapsed = time.perf_counter() - start
    peak = peak_rss_kib()
    print(f"MEMORY {num_docs} {baseline} {after_signatures} {peak} {elapsed:.2f}")


def bench_memory(num_docs: int, num_perm: int) -> str:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(num_docs), "--num-perm", str(num_perm)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    _, n, base, sig, peak, seconds = next(
        line for line in out.splitlines() if line.startswith("MEMORY")
    ).split()
    gib = 1 / 2**20  # VmHWM is in KiB
    sig_gib = num_docs * num_perm * 4 / 2**30
    return (
        f"| {int(n):,} | {sig_gib:.2f} | {int(base) * gib:.2f} | {int(sig) * gib:.2f} | {int(peak) * gib:.2f} "
        f"| {(int(peak) - int(sig)) * gib:.2f} | {seconds} |"
    )


def render(rows, args, corpus_line: str) -> str:
    """Throughput from wall-clock medians; the speed-up is also given on CPU time, which is
    the fairer single-core measure on a shared, noisy machine (1-thread rows only)."""
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, numba threads "
        f"{numba.config.NUMBA_NUM_THREADS}; num_perm={args.num_perm}; {corpus_line}",
        "",
        "| input | implementation | threads | wall s | CPU s | docs/s | shingles/s "
        "| speed-up (wall) | speed-up (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, name, threads, (wall, cpu), (base_wall, base_cpu) in rows:
        shingles_s = "-" if kind == "clusters" else f"{args.num_shingles / wall:,.0f}"
        cpu_ratio = f"{base_cpu / cpu:.1f}x" if threads == 1 else "-"
        lines.append(
            f"| {kind} | {name} | {threads} | {wall:.3f} | {cpu:.3f} | {args.num_docs / wall:,.0f} "
            f"| {shingles_s} | {base_wall / wall:.1f}x | {cpu_ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--docs", type=int, default=20_000, help="documents in the synthetic corpus"
    )
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument(
        "--threshold", type=float, default=0.8, help="Jaccard threshold for clustering"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--memory-docs", type=int, default=0, help="also measure peak RSS at this N"
    )
    parser.add_argument("--memory-only", action="store_true", help="only the --memory-docs run")
    parser.add_argument("--no-rensa", dest="rensa", action="store_false")
    parser.add_argument(
        "--quick", action="store_true", help="small smoke run (2000 docs, 1 repeat)"
    )
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.num_perm)
        return
    if args.memory_only:
        print_memory(args.memory_docs or 1_000_000, args.num_perm)
        return
    if args.quick:
        args.docs, args.repeats = 2000, 1
    texts = make_corpus(args.docs, args.seed)
    sets = [shingles(t, ShingleConfig()) for t in texts]
    args.num_docs, args.num_shingles = len(texts), sum(map(len, sets))
    rows: list = []
    bench_signatures(texts, sets, args, rows)
    bench_clusters(texts, args, rows)
    corpus_line = f"{args.num_docs} synthetic documents, {args.num_shingles} word-5-gram shingles"
    print(render(rows, args, corpus_line))
    if args.memory_docs:
        print_memory(args.memory_docs, args.num_perm)


def print_memory(num_docs: int, num_perm: int) -> None:
    print(
        "\n| documents | signatures GiB | peak RSS before GiB | peak RSS with signatures GiB "
        "| peak RSS GiB | clustering extra GiB | clustering s |"
    )
    print("|---|---|---|---|---|---|---|")
    print(bench_memory(num_docs, num_perm))


if __name__ == "__main__":
    main()
