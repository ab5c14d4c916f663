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
   replay from the segment start (and with canonical nodes, C = 8; and C = 8 with one-pass
   epochs, on domains of about ``1000 * w / mean(w)`` shards so that the natural weights are
   the same weights: one skip-ahead per slice inside its epoch);
4. a simulated cluster (issue 14): 8 nodes x 8 ranks x 8 workers, per-device batch 8, over 3
   domains with 10,000 shards in all. For one epoch, the distinct shards each node touches
   and the bytes it downloads without and with a ``cache_limit`` of 5% of the data (an LRU
   over the node's shard accesses in step order), for upstream's partition + py1e shuffle,
   streammix without canonical nodes (C = 1), with C = 8, and with C = 8 and one-pass
   epochs (the order natural proportions get); and the per-global-batch
   deviation of each domain's count from ``w * G``. The epoch cases of (1) also run
   streammix with C = 8.

Run: ``python3 benchmarks/bench_order.py`` (full, several minutes) or ``--quick``;
``--only cluster`` (or epochs, interleave, resume) runs one part.
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

import numba
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


def run_ours(n: int, threads: int, canonical_nodes: int = 1) -> None:
    from streammix.core import DomainLayout, OrderConfig, Schedule
    from streammix.core.epoch import worker_sample_ids

    config = OrderConfig(seed=9176, canonical_nodes=canonical_nodes, global_batch_size=GLOBAL_BATCH)

    def epoch(num: int) -> np.ndarray:
        sizes = _domain_sizes(num)
        domains = [DomainLayout(shard_sizes=_shards(size)) for size in sizes]
        return worker_sample_ids(config=config, domains=domains,
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
    kinds = ("upstream", "ours-1", "ours-2", "ours-1-c8", "ours-2-c8")
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
                     "ours-2": "streammix, 2 threads", "ours-1-c8": "streammix C=8, 1 thread",
                     "ours-2-c8": "streammix C=8, 2 threads"}[kind]  # fmt: skip
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

    rows = ["| domains | resume with skip-ahead (ms) | resume by replay (ms) "
            "| C=8 canonical nodes, skip-ahead (ms) | C=8 one-pass epochs (ms) |",
            "|---:|---:|---:|---:|---:|"]  # fmt: skip
    canonical = OrderConfig(seed=1, canonical_nodes=8, global_batch_size=GLOBAL_BATCH)
    one_pass = OrderConfig(seed=1, canonical_nodes=8, global_batch_size=GLOBAL_BATCH,
                           one_pass_epochs=True)
    for num_domains in (2, 4, 8, 16, 24, 32):
        weights = np.random.default_rng(100 + num_domains).random(num_domains) + 0.05
        case = (OrderConfig(seed=1), [DomainLayout(shard_sizes=(SHARD,) * 1000)] * num_domains,
                Schedule.initial(weights), position)  # fmt: skip
        _time_resume(*case)
        fast = statistics.median(_time_resume(*case) for _ in range(repeats))
        _time_resume(canonical, *case[1:])
        lanes = statistics.median(_time_resume(canonical, *case[1:]) for _ in range(repeats))
        saved = greedy_skip.MIN_SKIP
        greedy_skip.MIN_SKIP = 1 << 62  # force the plain replay
        try:
            slow = statistics.median(_time_resume(*case) for _ in range(repeats))
        finally:
            greedy_skip.MIN_SKIP = saved
        # one-pass epochs need natural weights: domains of about 1000 * w / mean(w) shards
        shards = np.maximum(np.rint(1000 * weights / weights.mean()).astype(int), 1)
        natural = (one_pass, [DomainLayout(shard_sizes=(SHARD,) * int(k)) for k in shards],
                   Schedule.initial(shards / shards.sum()), position)  # fmt: skip
        _time_resume(*natural)
        epochs = statistics.median(_time_resume(*natural) for _ in range(repeats))
        rows.append(f"| {num_domains} | {fast:.1f} | {slow:.0f} | {lanes:.1f} | {epochs:.1f} |")
        print(rows[-1], flush=True)
    return rows


CLUSTER_SHARDS = (5000, 3000, 2000)  # shards per domain: 10,000 in all
CLUSTER_SHARD_SAMPLES = 1000
SAMPLE_BYTES = 2048  # e.g. 1024 uint16 tokens: a shard is 2 MiB


@numba.njit(cache=True)
def _lru_misses_nb(accesses, shard_bytes, capacity):
    """Bytes downloaded by an LRU cache of ``capacity`` bytes over a shard access sequence."""
    num = shard_bytes.shape[0]
    prev = np.full(num + 1, -1, np.int64)  # doubly linked list, node ``num`` is the head
    nxt = np.full(num + 1, -1, np.int64)
    prev[num] = nxt[num] = num
    cached = np.zeros(num, np.bool_)
    used = downloaded = 0
    for i in range(accesses.shape[0]):
        s = accesses[i]
        if cached[s]:
            nxt[prev[s]] = nxt[s]
            prev[nxt[s]] = prev[s]
        else:
            cached[s] = True
            used += shard_bytes[s]
            downloaded += shard_bytes[s]
        nxt[s], prev[s] = nxt[num], num  # move to the front
        prev[nxt[num]] = s
        nxt[num] = s
        while used > capacity and prev[num] != s:
            tail = prev[num]
            nxt[prev[tail]] = num
            prev[num] = prev[tail]
            cached[tail] = False
            used -= shard_bytes[tail]
    return downloaded


def _cluster_layout():
    sizes = [n * CLUSTER_SHARD_SAMPLES for n in CLUSTER_SHARDS]
    starts = np.arange(sum(CLUSTER_SHARDS) + 1, dtype=np.int64) * CLUSTER_SHARD_SAMPLES
    return sizes, starts


def _upstream_cluster_ids(total: int, batches: int) -> np.ndarray:
    """Global sample ids, shape (batches, G): global batch g in rank order (upstream)."""
    from streaming.base.partition import get_partitions
    from streaming.base.shuffle import get_shuffle

    shard_sizes = np.full(sum(CLUSTER_SHARDS), CLUSTER_SHARD_SAMPLES, np.int64)
    ids = get_partitions("relaxed", total, NODES, NODES, RANKS_PER_NODE, WORKERS, PER_DEVICE)
    shuffle = get_shuffle("py1e", shard_sizes, NODES, 9176, 0, max(4_000_000 // NODES, 1 << 18))
    ids = np.where(ids != -1, shuffle[ids], -1)  # (nodes, ranks, workers, batches/K, B)
    # device batch j of every rank comes from worker j % K: step order is (j // K, j % K)
    steps = ids.transpose(3, 2, 0, 1, 4).reshape(-1, GLOBAL_BATCH)
    return steps[:batches]


def _ours_cluster_ids(canonical_nodes: int, batches: int, one_pass: bool = False) -> np.ndarray:
    from streammix.core import DomainLayout, GlobalOrder, OrderConfig, Schedule

    sizes, _ = _cluster_layout()
    domains = [DomainLayout(shard_sizes=(CLUSTER_SHARD_SAMPLES,) * n) for n in CLUSTER_SHARDS]
    config = OrderConfig(seed=9176, canonical_nodes=canonical_nodes, global_batch_size=GLOBAL_BATCH,
                         one_pass_epochs=one_pass)  # fmt: skip
    order = GlobalOrder(config=config, domains=domains,
                        schedule=Schedule.initial([s / sum(sizes) for s in sizes]))  # fmt: skip
    d, s = order.samples(0, batches * GLOBAL_BATCH)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    return (offsets[d] + s).reshape(batches, GLOBAL_BATCH)


def _cluster_row(label: str, ids: np.ndarray, starts: np.ndarray, weights: np.ndarray) -> str:
    shard = np.searchsorted(starts, ids, side="right") - 1
    num_shards = starts.shape[0] - 1
    shard_bytes = np.full(num_shards, CLUSTER_SHARD_SAMPLES * SAMPLE_BYTES, np.int64)
    capacity = int(0.05 * shard_bytes.sum())
    per_node = GLOBAL_BATCH // NODES
    touched, full, limited = [], [], []
    for node in range(NODES):
        accesses = np.ascontiguousarray(shard[:, node * per_node : (node + 1) * per_node]).ravel()
        distinct = np.unique(accesses)
        touched.append(distinct.shape[0])
        full.append(int(shard_bytes[distinct].sum()))
        limited.append(_lru_misses_nb(accesses, shard_bytes, capacity))
    domain_starts = np.cumsum((0,) + CLUSTER_SHARDS)[1:-1] * CLUSTER_SHARD_SAMPLES
    domain = np.searchsorted(domain_starts, ids, side="right")
    counts = np.stack([np.bincount(row, minlength=len(CLUSTER_SHARDS)) for row in domain])
    deviation = counts - weights * GLOBAL_BATCH
    fair = num_shards / NODES
    gib = 2.0**30
    return (f"| {label} | {max(touched):,} ({max(touched) / fair:.2f}x) | {np.mean(touched):,.0f} "
            f"| {max(full) / gib:.2f} | {max(limited) / gib:.2f} | {sum(limited) / gib:.1f} "
            f"| {np.abs(deviation).max():.2f} | {np.sqrt((deviation**2).mean()):.3f} |")  # fmt: skip


def bench_cluster() -> list[str]:
    sizes, starts = _cluster_layout()
    total = sum(sizes)
    batches = total // GLOBAL_BATCH
    weights = np.array(sizes) / total
    rows = [f"| order | shards a node touches, max (x total/N = {starts.shape[0] - 1:,}/{NODES}) "
            "| mean | GiB per node, no limit (max) | GiB per node, cache_limit 5% (max) "
            "| GiB all nodes, cache_limit 5% | batch deviation max | batch deviation RMS |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    cases = (("upstream (relaxed + py1e, 8 canonical nodes)", lambda: _upstream_cluster_ids(total, batches)),
             ("streammix today (C = 1)", lambda: _ours_cluster_ids(1, batches)),
             ("streammix C = 8", lambda: _ours_cluster_ids(8, batches)),
             ("streammix C = 8, one-pass epochs (what natural proportions use)",
              lambda: _ours_cluster_ids(8, batches, one_pass=True)))  # fmt: skip
    for label, make in cases:
        rows.append(_cluster_row(label, make(), starts, weights))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the markdown tables to this file")
    parser.add_argument("--only", action="append",
                        choices=("cluster", "epochs", "interleave", "resume"),
                        help="run only these parts (repeatable)")  # fmt: skip
    parser.add_argument("--case", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, n = args.case[0], int(args.case[1])
        if kind == "upstream":
            run_upstream(n)
        else:
            run_ours(n, threads=int(kind.split("-")[1]), canonical_nodes=8 if "c8" in kind else 1)
        return
    repeats = 1 if args.quick else args.repeats
    sizes = [1_000_000] if args.quick else [10_000_000, 100_000_000]
    position = 10**6 if args.quick else 10**8
    lines = [f"Command: `python3 benchmarks/bench_order.py {' '.join(sys.argv[1:])}`".rstrip(),
             f"Machine: {platform.processor() or platform.machine()}, 2 CPU cores shared with other jobs, "
             f"Python {platform.python_version()}, numpy {np.__version__}; medians of {repeats}.", "",
             ""]  # fmt: skip
    parts = set(args.only or ("cluster", "epochs", "interleave", "resume"))
    if "cluster" in parts:
        lines += [f"Simulated cluster, one epoch of {sum(CLUSTER_SHARDS) * CLUSTER_SHARD_SAMPLES:,} "
                  f"samples: {NODES} nodes x {RANKS_PER_NODE} ranks x {WORKERS} workers, global "
                  f"batch {GLOBAL_BATCH}, 3 domains of {CLUSTER_SHARDS} shards x "
                  f"{CLUSTER_SHARD_SAMPLES} samples x {SAMPLE_BYTES} B:", ""]  # fmt: skip
        lines += bench_cluster() + [""]
    if "epochs" in parts:
        lines += ["Epoch generation, 8 nodes x 8 ranks x 8 workers, per-device batch 8:", ""]
        lines += bench_epochs(sizes, repeats) + [""]
    if "interleave" in parts:
        lines += ["Interleave throughput, one core:", ""]
        lines += bench_interleave(2 * 10**6 if args.quick else 2 * 10**7, position, repeats)
        lines += [""]
    if "resume" in parts:
        lines += [f"Resume latency at position {position:,} (build GlobalOrder + one global "
                  "batch):", ""]  # fmt: skip
        lines += bench_resume(position, repeats)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
