"""Open a StreamMixDataset on a remote build from an empty cache, as every rank of a job does.

    composer -n 2 open_remote.py --remote s3://bucket/build --cache DIR --out DIR

Each rank reads its first batch and the held-out samples (the paths that fetch the
manifest, the shards and the held-out shards) and writes what it got to OUT/rank<R>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from composer.utils import dist, get_device

from streammix import MixingConfig, StreamMixDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--remote", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dist.initialize_dist(get_device("cpu"), timeout=120)
    dataset = StreamMixDataset(remote=args.remote, local=args.cache, batch_size=4,
                               mixing=MixingConfig(seed=3))
    first = [sample["text"][:40] for _, sample in zip(range(4), dataset)]
    held_out = {name: [s["text"][:40] for s in samples]
                for name, samples in dataset.held_out_samples(4).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{dist.get_global_rank()}.json").write_text(
        json.dumps({"first": first, "held_out": held_out}))
    dist.barrier()


if __name__ == "__main__":
    main()
