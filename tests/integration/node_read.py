"""One physical node of a simulated cluster: read a remote folder of MDS domains through its
own cache with StreamMixDataset and record the global batches it served.

    RANK=n WORLD_SIZE=N LOCAL_WORLD_SIZE=1 NODE_RANK=n MASTER_ADDR=... MASTER_PORT=... \\
        python node_read.py --remote ROOT --cache DIR --out FILE [...]

(the environment a launcher gives one rank per node; upstream's World reads it). With
``--online`` the weights change during the run as a mixing callback would publish them:
every node publishes the same decisions, as OnlineMixing broadcasts rank 0's. ``--state-at
B`` saves the checkpoint Composer would write after global batch ``B``; ``--resume FILE``
starts from one.
"""

from __future__ import annotations

import argparse
import json
import os

import streaming.base.shared.prefix as upstream_prefix
from streaming import Stream
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset

FIRST, SECOND = {"alpha": 1.0, "beta": 0.0, "gamma": 0.0}, {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}
SWITCH_BATCH = 3  # online weights: SECOND from this global batch on


def separate_shared_memory(node: int, num_nodes: int) -> None:
    """Real nodes have their own /dev/shm; simulated ones share this machine's, where their
    local leaders would pick the same free upstream prefix at once (between two barriers) and
    collide. Node ``n`` therefore only takes prefixes ``n, n + N, n + 2N, ...``."""

    def node_prefixes():
        prefix = node
        while True:
            yield prefix
            prefix += num_nodes

    upstream_prefix._each_prefix_int = node_prefixes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--remote", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--domains", default="alpha,beta,gamma")
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--canonical-nodes", type=int, default=None)
    parser.add_argument("--batches", type=int, required=True, help="stop after this global batch")
    parser.add_argument("--online", action="store_true")
    parser.add_argument("--state-at", type=int, default=None)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args()

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    separate_shared_memory(int(os.environ.get("NODE_RANK", "0")), world_size)
    G = args.global_batch
    streams = [Stream(remote=os.path.join(args.remote, name), local=os.path.join(args.cache, name))
               for name in args.domains.split(",")]
    dataset = StreamMixDataset(
        streams=streams, batch_size=G // world_size,
        mixing=MixingConfig(seed=7, canonical_nodes=args.canonical_nodes,
                            weight_updates="exact" if args.online else "static",
                            publish_timeout_s=60))
    batch = 0
    if args.resume:
        with open(args.resume) as f:
            state = json.load(f)
        dataset.load_state_dict(state)
        batch = state["streammix"]["position"] // G
    elif args.online:
        dataset.publish(0, FIRST, final_until=SWITCH_BATCH)
    per_epoch = dataset.epoch_size // G
    record = {"canonical_nodes": dataset.canonical_nodes, "first": batch, "batches": []}
    while batch < args.batches:
        loader = DataLoader(dataset, batch_size=G // world_size, collate_fn=list)
        for samples in loader:
            record["batches"].append([[int(s["domain"]), int(s["index"])] for s in samples])
            batch += 1
            if args.online and batch == SWITCH_BATCH:
                dataset.publish(SWITCH_BATCH, SECOND, final_until=10**9)
            if batch == args.state_at:
                record["state"] = dataset.state_dict(num_samples=(batch % per_epoch) * G,
                                                     from_beginning=True)
            if batch == args.batches:
                break
        del loader
    with open(args.out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
