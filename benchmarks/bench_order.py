"""Benchmark the streammix order against mosaicml-streaming 0.13's epoch generation.

Measures, in one run:

1. one epoch of N samples for 8 nodes x 8 ranks x 8 workers (per-device batch 8, global
   batch 512): upstream = ``get_partitions('relaxed')`` + ``get_shuffle('py1e')`` + the two
   ``np.where`` lookups that ``generate_work_random_batching`` performs (one stream per domain,
   shards of 10k samples, num_canonical_nodes = 8 and shuffle_block_size = 500k, the
   defaults for 8 nodes and py1e; int64 ids); ours = ``streammix.core.epoch.worker_sample_ids``
   (4 domains, weights proportional to their sizes) filling the same 512 per-worker lists of
   global sample ids (int32 here: the smallest type that holds the ids), with 1 and with 2
   threads. Each case runs in a fresh subprocess; peak memory is ``ru_maxrss`` after the case
   minus ``ru_maxrss`` after imports and a small warm-up, and CPU time is the subprocess's
   ``process_time`` (all threads; the machine is shared, so wall time is noisier).
2. interleave throughput (greedy with recorded picks, and the count-only replay), one core;
3. resume latency at position 1e8 inside a single 1e8-long segment: building a
   ``GlobalOrder`` and reading one global batch, with the exact skip-ahead and with a plain
   replay from the segment start.

Run: ``python3 benchmarks/bench_order.py`` (full, several minutes) or ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

NODES, RANKS_PER_NODE, WORKERS, PER_DEVICE = 8, 8, 8, 8
WORLD = NODES * RANKS_PER_NODE
GLOBAL_BATCH = WORLD * PER_DEVICE
SHARD = 10_000
DOMAIN_SHARES = (0.4, 0.3, 0.2, 0.1)


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _domain_sizes(n: int) -> list[int]:
    sizes = [int(n * share) for share in DOMAIN_SHARES]
    sizes[0] += n - sum(sizes)
    return sizes


def _shards(size: int) -> tuple[int, ...]:
    return (SHARD,) * (size // SHARD) + ((size % SHARD,) if size % SHARD else ())


def run_upstream(n: int) -> None:
    from streaming.base.partition import get_partitions
    from streaming.base.shuffle import get_shuffle

    def epoch(num: int) -> np.ndarray:
        shard_sizes = np.array([s for size in _domain_sizes(num) for s in _shards(size)], np.int64)
        small_per_big = np.arange(num, dtype=np.int64)
        big_ids = get_partitions("relaxed", num, NODES, NODES, RANKS_PER_NODE, WORKERS, PER_DEVICE)
        shuffle = get_shuffle("py1e", shard_sizes, NODES, 9176, 0, max(4_000_000 // NODES, 1 << 18))
        big_ids = np.where(big_ids != -1, shuffle[big_ids], -1)
        return np.where(big_ids != -1, small_per_big[big_ids], -1)

    epoch(40_000)
    _report(n, epoch)


def run_ours(n: int, threads: int) -> None:
    from streammix.core import DomainLayout, OrderConfig, Schedule
    from streammix.core.epoch import worker_sample_ids

    def epoch(num: int) -> np.ndarray:
        sizes = _domain_sizes(num)
        domains = [DomainLayout(shard_sizes=_shards(size)) for size in sizes]
        return worker_sample_ids(config=OrderConfig(seed=9176), domains=domains,
                                 schedule=Schedule.initial([s / num for s in sizes]),
                                 num_batches=num // GLOBAL_BATCH, world_size=WORLD,
                                 num_workers=WORKERS, global_batch_size=GLOBAL_BATCH,
                                 threads=threads)  # fmt: skip

    epoch(40_000)
    _report(n, epoch)


def _report(n: int, epoch) -> None:
    baseline = _rss_bytes()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = epoch(n)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _rss_bytes() - baseline
    print(
        json.dumps(
            {"seconds": seconds, "cpu": cpu, "peak_bytes": peak, "shape": list(result.shape)}
        )
    )


def run_case(kind: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", kind, str(n)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_epochs(sizes: list[int], repeats: int) -> list[str]:
    kinds = ("upstream", "ours-1", "ours-2")
    rows = ["| samples | implementation | wall s | CPU s | speed-up (wall) | speed-up (CPU) "
            "| peak B/sample | wall runs (s) |",
            "|---:|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for n in sizes:
        results: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for _ in range(repeats):  # interleave the cases so machine noise hits all of them
            for kind in kinds:
                results[kind].append(run_case(kind, n))
        wall = {k: statistics.median(r["seconds"] for r in rs) for k, rs in results.items()}
        cpu = {k: statistics.median(r["cpu"] for r in rs) for k, rs in results.items()}
        for kind, runs in results.items():
            peak = statistics.median(r["peak_bytes"] for r in runs) / n
            label = {"upstream": "upstream (partition + py1e)", "ours-1": "streammix, 1 thread",
                     "ours-2": "streammix, 2 threads"}[kind]  # fmt: skip
            walls = ", ".join(f"{r['seconds']:.3f}" for r in runs)
            rows.append(f"| {n:,} | {label} | {wall[kind]:.3f} | {cpu[kind]:.3f} "
                        f"| {wall['upstream'] / wall[kind]:.1f}x | {cpu['upstream'] / cpu[kind]:.1f}x "
                        f"| {peak:.2f} | {walls} |")  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def bench_interleave(n_record: int, n_skip: int, repeats: int) -> list[str]:
    from streammix.core.interleave import advance_greedy, skip_greedy

    rows = ["| domains | greedy with picks (M positions/s) | count-only replay (M positions/s) |",
            "|---:|---:|---:|"]  # fmt: skip
    for num_domains in (2, 4, 8, 16):
        weights = np.random.default_rng(num_domains).random(num_domains)
        weights /= weights.sum()
        zeros = np.zeros(num_domains, np.int64)
        advance_greedy(weights, 0, zeros, 10)
        skip_greedy(weights, 0, zeros, 10)
        record, skip = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            advance_greedy(weights, 0, zeros, n_record)
            record.append(n_record / (time.perf_counter() - start) / 1e6)
            start = time.perf_counter()
            skip_greedy(weights, 0, zeros, n_skip)
            skip.append(n_skip / (time.perf_counter() - start) / 1e6)
        rows.append(
            f"| {num_domains} | {statistics.median(record):.0f} | {statistics.median(skip):.0f} |"
        )
        print(rows[-1], flush=True)
    return rows


def _time_resume(config, domains, schedule, position: int) -> float:
    from streammix.core import GlobalOrder

    start = time.perf_counter()
    order = GlobalOrder(config=config, domains=domains, schedule=schedule)
    order.samples(position, position + GLOBAL_BATCH)
    return (time.perf_counter() - start) * 1e3


def bench_resume(position: int, repeats: int) -> list[str]:
    from streammix.core import DomainLayout, OrderConfig, Schedule, greedy_skip

    rows = ["| domains | resume with skip-ahead (ms) | resume by replay (ms) |", "|---:|---:|---:|"]
    for num_domains in (2, 4, 8, 16, 24, 32):
        weights = np.random.default_rng(100 + num_domains).random(num_domains) + 0.05
        case = (OrderConfig(seed=1), [DomainLayout(shard_sizes=(SHARD,) * 1000)] * num_domains,
                Schedule.initial(weights), position)  # fmt: skip
        _time_resume(*case)
        fast = statistics.median(_time_resume(*case) for _ in range(repeats))
        saved = greedy_skip.MIN_SKIP
        greedy_skip.MIN_SKIP = 1 << 62  # force the plain replay
        try:
            slow = statistics.median(_time_resume(*case) for _ in range(repeats))
        finally:
            greedy_skip.MIN_SKIP = saved
        rows.append(f"| {num_domains} | {fast:.1f} | {slow:.0f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the markdown tables to this file")
    parser.add_argument("--case", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, n = args.case[0], int(args.case[1])
        if kind == "upstream":
            run_upstream(n)
        else:
            run_ours(n, threads=int(kind.split("-")[1]))
        return
    repeats = 1 if args.quick else args.repeats
    sizes = [1_000_000] if args.quick else [10_000_000, 100_000_000]
    position = 10**6 if args.quick else 10**8
    lines = [f"Command: `python3 benchmarks/bench_order.py {' '.join(sys.argv[1:])}`".rstrip(),
             f"Machine: {platform.processor() or platform.machine()}, 2 CPU cores shared with other jobs, "
             f"Python {platform.python_version()}, numpy {np.__version__}; medians of {repeats}.", "",
             "Epoch generation, 8 nodes x 8 ranks x 8 workers, per-device batch 8:", ""]  # fmt: skip
    lines += bench_epochs(sizes, repeats)
    lines += ["", "Interleave throughput, one core:", ""]
    lines += bench_interleave(2 * 10**6 if args.quick else 2 * 10**7, position, repeats)
    lines += [
        "",
        f"Resume latency at position {position:,} (build GlobalOrder + one global batch):",
        "",
    ]
    lines += bench_resume(position, repeats)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
