"""How much the shuffle mixes: streammix's shard windows against upstream's py1e (issue 14).

One domain of ``--shards`` shards of ``--shard-samples`` samples, split over ``C`` canonical
nodes (default 8). For one pass (one epoch), each order is measured the same way:

- **shard spread**: for every shard, the output positions its samples land on (max - min,
  within one canonical node's part of the output). A shuffle mixes each sample with the
  samples that land within this span: it is the number of distinct samples one window of
  the shuffle mixes. Reported as the median and 99th percentile over shards.
- **distinct shards per output block**: how many shards the samples of ``B`` consecutive
  output positions of one canonical node come from (median and max over blocks), for
  ``B`` = 512 and ``B`` = one shard's worth; times the shard size this is the pool the block
  was drawn from. It is also the node's working set of shards while reading that block.

Orders: upstream ``get_shuffle('py1e', ..., num_canonical_nodes=C, block_size=...)`` at
its default ``shuffle_block_size = max(4,000,000 // C, 262,144)``; streammix's pass of
every canonical group (:mod:`streammix.core.groups`, :class:`streammix.core.passes.
PassTables`) for several ``window_shards``; and a uniform shuffle of each canonical node's
samples (the most a shuffle can mix there).

Run: ``python benchmarks/bench_shuffle.py`` (about a minute at the defaults).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from streaming.base.shuffle import get_shuffle

from streammix.core.groups import split_domain
from streammix.core.passes import DomainLayout, PassTables

SEED = 9176


def upstream_parts(sizes: np.ndarray, canonical_nodes: int, block: int) -> list[np.ndarray]:
    """py1e's epoch-0 order, cut into its canonical nodes' parts (equal sample counts)."""
    ids = get_shuffle("py1e", sizes, canonical_nodes, SEED, 0, block)
    bounds = np.arange(canonical_nodes + 1) * ids.shape[0] // canonical_nodes
    return [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def streammix_parts(layout: DomainLayout, canonical_nodes: int,
                    window_shards: int) -> list[np.ndarray]:
    """Pass 0 of every canonical group of the domain."""
    groups = split_domain(layout, canonical_nodes)
    parts = []
    for c in range(canonical_nodes):
        tables = PassTables(layout, seed=SEED, domain=0, window_shards=window_shards,
                            pieces=groups.pieces[c], piece_elements=groups.piece_elements[c],
                            group=(c, canonical_nodes))
        parts.append(tables.elements_to_samples(0, tables.pass_size))
    return parts


def uniform_parts(layout: DomainLayout, canonical_nodes: int) -> list[np.ndarray]:
    groups = split_domain(layout, canonical_nodes)
    rng = np.random.Generator(np.random.PCG64(SEED))
    parts = []
    for starts, stops in groups.pieces:
        ids = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])
        parts.append(rng.permutation(ids))
    return parts


def measure(parts: list[np.ndarray], shard_samples: int) -> dict[str, float]:
    spreads, per_block = [], {512: [], shard_samples: []}
    for ids in parts:
        shard = ids // shard_samples
        positions = np.arange(ids.shape[0])
        order = np.argsort(shard, kind="stable")
        keys, first = np.unique(shard[order], return_index=True)
        lo = np.minimum.reduceat(positions[order], first)
        hi = np.maximum.reduceat(positions[order], first)
        spreads.append(hi - lo + 1)
        for size in per_block:
            usable = ids.shape[0] // size * size
            blocks = np.sort(shard[:usable].reshape(-1, size), axis=1)
            per_block[size].append((np.diff(blocks, axis=1) != 0).sum(axis=1) + 1)
    spread = np.concatenate(spreads)
    result = {"spread_median": float(np.median(spread)),
              "spread_p99": float(np.percentile(spread, 99))}
    for size, counts in per_block.items():
        counts = np.concatenate(counts)
        result[f"shards_{size}_median"] = float(np.median(counts))
        result[f"shards_{size}_max"] = float(counts.max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--shard-samples", type=int, default=10_000)
    parser.add_argument("--canonical-nodes", type=int, default=8)
    parser.add_argument("--windows", default="4,16,64")
    args = parser.parse_args()
    C, S = args.canonical_nodes, args.shard_samples
    sizes = np.full(args.shards, S, dtype=np.int64)
    layout = DomainLayout(shard_sizes=tuple(int(x) for x in sizes))
    block = max(4_000_000 // C, 1 << 18)
    cases = [(f"upstream py1e, default shuffle_block_size = {block:,}",
              lambda: upstream_parts(sizes, C, block))]
    cases += [(f"streammix window_shards = {w} ({w * S:,} samples)",
               lambda w=w: streammix_parts(layout, C, w))
              for w in (int(x) for x in args.windows.split(","))]
    cases.append(("uniform shuffle of each canonical node", lambda: uniform_parts(layout, C)))
    print(f"{args.shards:,} shards x {S:,} samples, C = {C} canonical nodes "
          f"({args.shards * S // C:,} samples each)\n")
    print(f"| order | shard spread, median | p99 | shards per 512 outputs, median | max "
          f"| shards per {S:,} outputs, median | max | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, make in cases:
        start = time.perf_counter()
        parts = make()
        seconds = time.perf_counter() - start
        m = measure(parts, S)
        print(f"| {name} | {m['spread_median']:,.0f} | {m['spread_p99']:,.0f} "
              f"| {m['shards_512_median']:.0f} | {m['shards_512_max']:.0f} "
              f"| {m[f'shards_{S}_median']:.0f} | {m[f'shards_{S}_max']:.0f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
