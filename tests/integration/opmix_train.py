"""A real Composer run with OP-Mix probing over StreamMixDataset, driven by the OP-Mix tests.

    python opmix_train.py --data DIR --run RUN --batches N [--load CKPT] [...]
    composer -n 2 opmix_train.py ...                   # the same on 2 ranks (gloo, CPU)

The data is composer_train.py's (``pattern`` counting sequences and ``noise``). Every rank
records its batches like composer_train.py does and, at the end, the weight updates its
dataset published; rank 0 writes RUN/history.jsonl.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import torch
from composer import Trainer
from composer.optim import DecoupledAdamW
from composer.utils import dist, get_device
from streaming import Stream
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from composer_train import DOMAINS, SEQ_LEN, VOCAB, RecordBatches, UidCollator  # noqa: E402

import streammix.composer.opmix as opmix_module  # noqa: E402
from streammix import MixingConfig, StreamMixDataset  # noqa: E402
from streammix.composer.model import tiny_gpt2  # noqa: E402
from streammix.composer.opmix import OpMixProbing, ProbeConfig  # noqa: E402
from streammix.dataset.dataset import read_split_head  # noqa: E402


def kill_during_probe() -> None:
    """A crash in the middle of probing: adapters trained, proxies half evaluated."""
    original, calls = opmix_module.set_interpolation, []

    def set_interpolation(layers, mixture):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        original(layers, mixture)

    opmix_module.set_interpolation = set_interpolation


def skew_rank1_probes() -> None:
    """Rank 1 pairs its probe losses with the mirrored mixtures (``x`` read as ``1 - x`` for
    two domains): fed these, the policy alone would favour the noise domain. The ranks agree
    only if rank 1 applies rank 0's decision instead of its own."""
    original = OpMixProbing.probe_now

    def probe_now(self, state, mixtures, step):
        observation, cost = original(self, state, mixtures, step)
        if dist.get_global_rank() == 1:
            observation = replace(observation,
                                  proxy_mixtures=observation.proxy_mixtures[:, ::-1])
        return observation, cost

    OpMixProbing.probe_now = probe_now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--batches", type=int, required=True)
    parser.add_argument("--save-interval", type=int, default=1000)
    parser.add_argument("--load", default=None)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--probe-steps", type=int, default=15)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--probe-every", type=int, default=None)
    parser.add_argument("--kill-in-probe", action="store_true",
                        help="SIGKILL this process while it evaluates the third proxy")
    parser.add_argument("--skew-rank1", action="store_true",
                        help="rank 1 feeds its policy mirrored probe mixtures")
    args = parser.parse_args()
    if args.kill_in_probe:
        kill_during_probe()
    if args.skew_rank1:
        skew_rank1_probes()
    torch.set_num_threads(1)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    dist.initialize_dist(get_device("cpu"), timeout=120)
    per_device = args.global_batch // dist.get_world_size()
    mixing = MixingConfig(global_batch_size=args.global_batch, seed=args.seed,
                          weight_updates="exact", publish_timeout_s=300)
    dataset = StreamMixDataset(streams=[Stream(local=str(Path(args.data) / n)) for n in DOMAINS],
                               batch_size=per_device, mixing=mixing)
    loader = DataLoader(dataset, batch_size=per_device, num_workers=0,
                        collate_fn=UidCollator(max_seq_len=SEQ_LEN, pad_id=0))
    val_data = {n: read_split_head(str(Path(args.data) / f"{n}-val"), None, 16) for n in DOMAINS}
    opmix = OpMixProbing(
        "opmix", policy_options={"fit_starts": 4, "num_random": 4, "seed": 5,
                                 "probe_every": args.probe_every, "prior": "current"},
        probe=ProbeConfig(r=4, alpha=8.0, steps=args.probe_steps, lr=1e-2, batch_size=8,
                          train_samples=64, val_samples=16, seed=3),
        val_data=val_data, history_path=run / "history.jsonl")
    model = tiny_gpt2(vocab_size=VOCAB, max_seq_len=SEQ_LEN, n_layer=1, n_head=2, n_embd=32,
                      seed=args.seed)
    trainer = Trainer(
        model=model, optimizers=DecoupledAdamW(model.parameters(), lr=3e-3),
        train_dataloader=loader, max_duration=f"{args.batches}ba",
        callbacks=[RecordBatches(run / f"record.rank{dist.get_global_rank()}.jsonl"), opmix],
        save_folder=str(run / "checkpoints"), save_interval=f"{args.save_interval}ba",
        save_num_checkpoints_to_keep=-1, save_overwrite=True, load_path=args.load,
        device="cpu", seed=args.seed, progress_bar=False, log_to_console=False,
    )
    trainer.fit()
    trainer.close()


if __name__ == "__main__":
    main()
