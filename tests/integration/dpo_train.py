"""A real Composer DPO run over two pair domains mixed 0.5/0.5 (SimpleMix), for the tests.

    python dpo_train.py make-data DIR                   # pair domains "on" and "off"
    python dpo_train.py train --data DIR --run RUN --batches N [--load CKPT]
    composer -n 2 dpo_train.py train ...                # the same on 2 ranks (gloo, CPU)

Every rank appends one JSON line per batch to RUN/record.rank<R>.jsonl: the global batch
index, the (domain, prompt tokens) of its pairs and the batch's DPO loss; at the end rank 0
writes the policy's and the reference's parameters summed (RUN/params.json).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from composer import Trainer
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.optim import DecoupledAdamW
from composer.utils import dist, get_device
from torch.utils.data import DataLoader

from streammix import MixingConfig, StreamMixDataset
from streammix.composer.dpo import DPOCollator, DPOConfig, DPOModel
from streammix.composer.model import tiny_gpt2
from streammix.format.pairs import PairStreamWriter

VOCAB = 32
EOS = 0
DOMAINS = ("on", "off")


def make_data(out: Path, *, count: int = 96, seed: int = 0) -> None:
    """``on``: chosen = the prompt reversed; ``off``: chosen = the prompt sorted; the rejected
    responses are random tokens. Responses end with EOS (0)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    for name in DOMAINS:
        with PairStreamWriter(out / name, token_dtype="uint16", compression=None,
                              size_limit=2048) as writer:
            for _ in range(count):
                prompt = rng.integers(1, VOCAB, 5)
                chosen = prompt[::-1] if name == "on" else np.sort(prompt)
                rejected = rng.integers(1, VOCAB, int(rng.integers(2, 7)))
                tokens = {"prompt": prompt.tolist(), "chosen": [*chosen.tolist(), EOS],
                          "rejected": [*rejected.tolist(), EOS]}
                texts = {side: " ".join(map(str, ids)) for side, ids in tokens.items()}
                writer.write_pair(texts, tokens, DOMAINS.index(name))


class PromptCollator(DPOCollator):
    def __call__(self, samples):
        batch = super().__call__(samples)
        batch["prompt"] = torch.tensor(np.stack([np.asarray(s["prompt_tokens"], np.int64)
                                                 for s in samples]))
        return batch


class Record(Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.BATCH_END:
            record = {"batch": int(state.timestamp.batch) - 1,
                      "samples": list(zip(state.batch["domain"].tolist(),
                                          state.batch["prompt"].tolist())),
                      "loss": float(state.loss)}
            with open(self.path, "a") as stream:
                stream.write(json.dumps(record) + "\n")
                stream.flush()
                os.fsync(stream.fileno())


def train(args: argparse.Namespace) -> None:
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    dist.initialize_dist(get_device("cpu"), timeout=120)
    torch.set_num_threads(1)
    per_device = args.global_batch // dist.get_world_size()
    from streaming import Stream

    dataset = StreamMixDataset(
        streams=[Stream(local=str(Path(args.data) / name)) for name in DOMAINS],
        batch_size=per_device,
        mixing=MixingConfig(domain_weights={"on": 0.5, "off": 0.5},
                            global_batch_size=args.global_batch, seed=args.seed))
    loader = DataLoader(dataset, batch_size=per_device, num_workers=0,
                        collate_fn=PromptCollator(max_seq_len=16, pad_id=0))
    policy = tiny_gpt2(vocab_size=VOCAB, max_seq_len=16, n_layer=1, n_head=2, n_embd=32,
                       seed=args.seed).model
    model = DPOModel(policy, config=DPOConfig(beta=0.5), domain_names=dataset.domain_names)
    trainer = Trainer(
        model=model,
        optimizers=DecoupledAdamW(model.policy.parameters(), lr=3e-3),
        train_dataloader=loader,
        max_duration=f"{args.batches}ba",
        callbacks=[Record(run / f"record.rank{dist.get_global_rank()}.jsonl")],
        save_folder=str(run / "checkpoints"),
        save_interval=f"{args.save_interval}ba",
        save_num_checkpoints_to_keep=-1,
        save_overwrite=True,
        load_path=args.load,
        device="cpu",
        seed=args.seed,
        progress_bar=False,
        log_to_console=False,
    )
    trainer.fit()
    if dist.get_global_rank() == 0:
        sums = {name: float(sum(p.double().sum() for p in module.parameters()))
                for name, module in (("policy", model.policy), ("reference", model.reference))}
        metrics = {name: float(metric.compute())
                   for name, metric in trainer.state.train_metrics.items()}
        (run / "params.json").write_text(json.dumps({"sums": sums, "metrics": metrics}))
    trainer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-data")
    make.add_argument("out", type=Path)
    run = sub.add_parser("train")
    run.add_argument("--data", required=True)
    run.add_argument("--run", required=True)
    run.add_argument("--batches", type=int, required=True)
    run.add_argument("--save-interval", type=int, default=4)
    run.add_argument("--load", default=None)
    run.add_argument("--global-batch", type=int, default=8)
    run.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    if args.command == "make-data":
        make_data(args.out)
    else:
        train(args)


if __name__ == "__main__":
    main()
