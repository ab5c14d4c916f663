"""A real Composer training run over StreamMixDataset, driven by the integration tests.

    python composer_train.py make-data DIR              # two token domains (+ held-out splits)
    python composer_train.py train --data DIR --run RUN --batches N [...]
    composer -n 2 composer_train.py train ...           # the same on 2 ranks (gloo, CPU)

Every rank appends one JSON line per batch to RUN/record.rank<R>.jsonl: the global batch
index and the (domain, uid) of each of its samples, so tests can compare orders across
interrupted, resumed and differently sized runs.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import zlib
from pathlib import Path

import numpy as np
from composer import Trainer
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.optim import DecoupledAdamW
from composer.utils import dist, get_device
from streaming import MDSWriter
from torch.utils.data import DataLoader

from streammix import MixingConfig, OnlineMixing, StreamMixDataset
from streammix.composer.model import LMCollator, tiny_gpt2
from streammix.dataset.dataset import read_split_head
from streammix.format.sidecar import write_token_counts

VOCAB = 64
SEQ_LEN = 16
DOMAINS = ("pattern", "noise")


def make_data(out: Path, *, train: int = 160, val: int = 16, seed: int = 0) -> None:
    """``pattern``: learnable counting sequences; ``noise``: uniformly random tokens."""
    rng = np.random.Generator(np.random.PCG64(seed))
    for name in DOMAINS:
        for split, count in (("", train), ("-val", val)):
            folder = out / f"{name}{split}"
            with MDSWriter(out=str(folder), columns={"tokens": "ndarray:uint16", "uid": "int"},
                           compression=None, size_limit=2048) as writer:
                for i in range(count):
                    if name == "pattern":
                        start, step = rng.integers(0, VOCAB), rng.integers(1, 4)
                        tokens = (start + step * np.arange(SEQ_LEN)) % VOCAB
                    else:
                        tokens = rng.integers(0, VOCAB, SEQ_LEN)
                    uid = (0 if name == "pattern" else 1_000_000) + (500_000 if split else 0) + i
                    writer.write({"tokens": tokens.astype(np.uint16), "uid": uid})
            write_token_counts(folder, np.full(count, SEQ_LEN))  # lets packed runs read them


class UidCollator(LMCollator):
    def __call__(self, samples):
        batch = super().__call__(samples)
        import torch

        batch["uid"] = torch.tensor([int(s["uid"]) if "uid" in s else
                                     zlib.crc32(np.asarray(s.get("tokens", s.get("input_ids")))
                                                .astype(np.int64).tobytes())
                                     for s in samples], dtype=torch.int64)
        return batch


class RankSkewedPolicy:
    """A policy that would decide differently on every rank (its weights depend on the
    rank it runs on): with OnlineMixing every rank must still apply rank 0's decision."""

    name = "rank-skewed"
    needs_validation = False

    def init(self, num_domains, initial_weights=None):
        return {"next_step": 0, "decisions": 0}

    def _decision(self, state):
        from streammix.mixing.protocol import Decision

        skew = 0.1 * (1 + dist.get_global_rank()) * (1 + state["decisions"] % 3)
        state = {"next_step": state["next_step"] + 2, "decisions": state["decisions"] + 1}
        return Decision(weights=np.array([0.5 + skew, 0.5 - skew]), num_steps=2,
                        evaluate=False, phase="train"), state

    def start(self, state):
        return self._decision(state)

    def update(self, state, observation):
        return self._decision(state)

    def state_dict(self, state):
        return dict(state)

    def load_state_dict(self, obj):
        return dict(obj)


class RecordBatches(Callback):
    """Per-batch samples, and at the end the weight updates this rank's dataset published."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.FIT_END:
            updates = state.train_dataloader.dataset.published_updates
            self.path.with_suffix(".updates.json").write_text(json.dumps(updates))
            mixing = [c for c in state.callbacks if isinstance(c, OnlineMixing)]
            if mixing:
                self.path.with_suffix(".validation.json").write_text(
                    json.dumps(mixing[0].validation_batches_run))
        if event == Event.AFTER_DATALOADER:
            record = {"batch": int(state.timestamp.batch),
                      "samples": list(zip(state.batch["domain"].tolist(),
                                          state.batch["uid"].tolist()))}
            with open(self.path, "a") as stream:
                stream.write(json.dumps(record) + "\n")
                stream.flush()
                os.fsync(stream.fileno())


def make_model(kind: str, *, vocab: int, max_seq_len: int, seed: int):
    """``tiny``: streammix's GPT-2 wrapper; ``gpt2``/``llama``: a Hugging Face causal LM made
    from a config, in Composer's own ``HuggingFaceModel`` (no streammix code in the model)."""
    if kind == "tiny":
        return tiny_gpt2(vocab_size=vocab, max_seq_len=max_seq_len, n_layer=1, n_head=2,
                         n_embd=32, seed=seed)
    import torch
    from composer.models import HuggingFaceModel
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if kind == "gpt2":
            # no dropout: Composer restores the RNG only at epoch starts, so dropout masks
            # after a mid-epoch resume would differ and so would the losses
            model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=max_seq_len,
                                               n_layer=1, n_head=2, n_embd=32, resid_pdrop=0.0,
                                               embd_pdrop=0.0, attn_pdrop=0.0))
        else:
            model = LlamaForCausalLM(LlamaConfig(
                vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1,
                max_position_embeddings=max_seq_len))
    return HuggingFaceModel(model, use_logits=True)


class SaveEvery:
    """Composer ``save_interval``: every ``batches`` batches, and at epoch ends if asked."""

    def __init__(self, batches: int, *, epochs: bool) -> None:
        self.batches = batches
        self.epochs = epochs

    def __call__(self, state: State, event: Event) -> bool:
        if event == Event.EPOCH_CHECKPOINT:
            return self.epochs
        return event == Event.BATCH_CHECKPOINT and int(state.timestamp.batch) % self.batches == 0


def train(args: argparse.Namespace) -> None:
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    # One process group for the whole run, before any dataset exists (as Composer scripts do):
    # otherwise every upstream StreamingDataset creates and destroys its own on the same port.
    dist.initialize_dist(get_device("cpu"), timeout=120)
    per_device = args.global_batch // dist.get_world_size()
    from streaming import Stream

    def stream(name: str, split: str = "") -> Stream:
        if args.remote:  # --data is a remote root: a folder or an s3:// URL
            return Stream(remote=posixpath.join(args.data, f"{name}{split}"),
                          local=str(Path(args.cache) / f"{name}{split}"))
        return Stream(local=str(Path(args.data) / f"{name}{split}"))

    packing = {} if args.pack is None else {"sequence_length": args.pack, "separator_id": 0,
                                            "packing": args.packing}
    mixing = MixingConfig(global_batch_size=args.global_batch, seed=args.seed,
                          weight_updates="static" if args.policy == "none" else args.mode,
                          lag_batches=args.lag, publish_timeout_s=120,
                          canonical_nodes=args.canonical_nodes, **packing)
    extra = {"cache_limit": args.cache_limit} if args.cache_limit else {}
    if args.build:  # a streammix build, read from --data (a remote when --remote) into --cache
        where = ({"remote": args.data, "local": args.cache} if args.remote
                 else {"local": args.data})
        dataset = StreamMixDataset(**where, batch_size=per_device, mixing=mixing, **extra)
    else:
        dataset = StreamMixDataset(streams=[stream(n) for n in DOMAINS], batch_size=per_device,
                                   mixing=mixing, **extra)
    collate = UidCollator(max_seq_len=args.pack or SEQ_LEN, pad_id=0)
    loader = DataLoader(dataset, batch_size=per_device, num_workers=args.workers,
                        collate_fn=collate, persistent_workers=args.workers > 0)
    callbacks: list[Callback] = [RecordBatches(run / f"record.rank{dist.get_global_rank()}.jsonl")]
    if args.policy != "none":
        val_data = None if args.build else {  # a build: the callback reads its held-out splits
            name: [dict(s, domain=d) for s in
                   read_split_head(str(Path(args.data) / f"{name}-val"), None, 10_000)]
            for d, name in enumerate(DOMAINS)}
        policy = RankSkewedPolicy() if args.policy == "rank-skewed" else args.policy
        options = None if args.policy == "rank-skewed" else json.loads(args.policy_options)
        callbacks.append(OnlineMixing(policy, policy_options=options,
                                      val_data=val_data, val_batch_size=8,
                                      history_path=run / "history.jsonl"))
    model = make_model(args.model, vocab=args.vocab, max_seq_len=args.pack or SEQ_LEN,
                       seed=args.seed)
    trainer = Trainer(
        model=model,
        optimizers=DecoupledAdamW(model.parameters(), lr=3e-3),
        train_dataloader=loader,
        max_duration=f"{args.batches}ba",
        callbacks=callbacks,
        save_folder=str(run / "checkpoints"),
        save_interval=SaveEvery(args.save_interval, epochs=args.save_epochs),
        save_num_checkpoints_to_keep=-1,
        save_overwrite=True,
        load_path=args.load,
        device="cpu",
        seed=args.seed,
        progress_bar=False,
        log_to_console=False,
    )
    trainer.fit()
    trainer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-data")
    make.add_argument("out", type=Path)
    make.add_argument("--train", type=int, default=160, help="training samples per domain")
    run = sub.add_parser("train")
    run.add_argument("--data", required=True)
    run.add_argument("--run", required=True)
    run.add_argument("--batches", type=int, required=True)
    run.add_argument("--save-interval", type=int, default=2)
    run.add_argument("--save-epochs", action="store_true", help="also save at every epoch end")
    run.add_argument("--load", default=None)
    run.add_argument("--global-batch", type=int, default=8)
    run.add_argument("--workers", type=int, default=0)
    run.add_argument("--seed", type=int, default=17)
    run.add_argument("--canonical-nodes", type=int, default=None)
    run.add_argument("--policy", default="none")
    run.add_argument("--policy-options", default="{}")
    run.add_argument("--mode", default="exact", choices=["exact", "lagged"])
    run.add_argument("--lag", type=int, default=0)
    run.add_argument("--remote", action="store_true", help="read --data as a remote, cache in --cache")
    run.add_argument("--cache", default=None)
    run.add_argument("--cache-limit", default=None)
    run.add_argument("--build", action="store_true",
                     help="--data is a streammix build (samples have no uid: a token hash)")
    run.add_argument("--vocab", type=int, default=VOCAB)
    run.add_argument("--model", choices=["tiny", "gpt2", "llama"], default="tiny")
    run.add_argument("--pack", type=int, default=None, help="pack blocks of this many tokens")
    run.add_argument("--packing", choices=["domain", "mixed"], default="domain")
    args = parser.parse_args()
    if args.command == "make-data":
        make_data(args.out, train=args.train)
    else:
        train(args)


if __name__ == "__main__":
    main()
