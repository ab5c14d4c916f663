"""One small, complete training run over a streammix build, used by the demo and benchmarks.

A run trains a randomly initialised GPT-2 (``streammix.composer.model``) with Composer on a
``StreamMixDataset`` under one mixing recipe, then measures held-out loss per domain on each
domain's ``-val`` split (token-weighted mean cross-entropy, perplexity = exp of it):

* ``static``: fixed domain weights (``weights=None`` = natural proportions, or e.g. uniform
  for stratified sampling), optionally with SampleMix repeat counts (``sample_counts``);
* any online policy name (``aioli``, ``odm``, ``doremi``, ...) driven by ``OnlineMixing``.

Everything is seeded: the model initialisation, the order and the policy.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from composer import Trainer
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.optim import DecoupledAdamW
from torch.utils.data import DataLoader

from streammix.composer.callback import OnlineMixing
from streammix.composer.model import LMCollator, tiny_gpt2
from streammix.dataset.config import MixingConfig
from streammix.dataset.dataset import StreamMixDataset


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    build: Path
    out: Path
    steps: int
    policy: str = "static"                       # "static" or an online policy name
    policy_options: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, float] | None = None   # static weights; None = natural
    sample_counts: Path | None = None            # SampleMix plan file
    seed: int = 0
    seq_len: int = 128
    batch_size: int = 16
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    lr: float = 3e-3
    vocab_size: int = 4096
    pad_id: int = 0
    val_samples: int = 64
    num_workers: int = 0
    verbose: bool = False


class PrintDecisions(Callback):
    """Prints each OnlineMixing decision: weights, and the losses that led to it."""

    def __init__(self, mixing: OnlineMixing) -> None:
        self.mixing = mixing
        self.printed = 0

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event not in (Event.BATCH_END, Event.FIT_START):
            return
        names = self.mixing._dataset.domain_names if self.mixing._dataset else ()
        while self.printed < len(self.mixing.history):
            record = self.mixing.history[self.printed]
            self.printed += 1
            losses = record["val_loss"] or record["train_loss"]
            kind = "val" if record["val_loss"] else "train"
            parts = [f"{n}: w={w:.3f}" + (f" {kind}={loss:.3f}" if loss is not None else "")
                     for n, w, loss in zip(names, record["weights"], losses or [None] * len(names))]
            print(f"   step {record['step']:>5} {record['phase']:<10} " + " | ".join(parts),
                  flush=True)


def held_out_loss(model: torch.nn.Module, dataset: StreamMixDataset, collate: LMCollator,
                  *, per_domain: int, batch_size: int = 16) -> dict[str, float]:
    """Token-weighted mean held-out cross-entropy per domain."""
    from streammix.composer.model import causal_lm_loss_sums

    result = {}
    model.eval()
    with torch.no_grad():
        for name, samples in dataset.held_out_samples(per_domain).items():
            total, tokens = 0.0, 0
            for i in range(0, len(samples), batch_size):
                batch = collate(samples[i:i + batch_size])
                logits = model(batch).logits
                loss_sum, count = causal_lm_loss_sums(logits, batch["labels"])
                total += float(loss_sum.sum())
                tokens += int(count.sum())
            result[name] = total / tokens
    model.train()
    return result


def run_experiment(config: ExperimentConfig) -> dict[str, Any]:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    online = config.policy != "static"
    mixing = MixingConfig(domain_weights=config.weights,
                          sample_counts=str(config.sample_counts) if config.sample_counts else None,
                          seed=config.seed, weight_updates="exact" if online else "static",
                          publish_timeout_s=300)
    gc.collect()
    dataset = StreamMixDataset(local=str(config.build), batch_size=config.batch_size,
                               mixing=mixing)
    collate = LMCollator(max_seq_len=config.seq_len, pad_id=config.pad_id)
    loader = DataLoader(dataset, batch_size=config.batch_size, collate_fn=collate,
                        num_workers=config.num_workers)
    model = tiny_gpt2(vocab_size=config.vocab_size, max_seq_len=config.seq_len,
                      n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                      seed=config.seed)
    callbacks: list[Callback] = []
    mixing_callback = None
    if online:
        mixing_callback = OnlineMixing(config.policy, policy_options=dict(config.policy_options),
                                       val_samples=min(32, config.val_samples), val_batch_size=16,
                                       history_path=out / "history.jsonl")
        callbacks.append(mixing_callback)
        if config.verbose:
            callbacks.append(PrintDecisions(mixing_callback))
    trainer = Trainer(model=model, optimizers=DecoupledAdamW(model.parameters(), lr=config.lr),
                      train_dataloader=loader, max_duration=f"{config.steps}ba",
                      callbacks=callbacks, device="cpu", seed=config.seed, progress_bar=False,
                      log_to_console=False)
    started = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - started
    losses = held_out_loss(model, dataset, collate, per_domain=config.val_samples)
    trainer.close()
    mean_loss = sum(losses.values()) / len(losses)
    result = {
        "policy": config.policy, "seed": config.seed, "steps": config.steps,
        "train_seconds": seconds, "held_out_loss": losses,
        "perplexity": {n: math.exp(v) for n, v in losses.items()},
        "mean_perplexity": sum(math.exp(v) for v in losses.values()) / len(losses),
        "mean_loss": mean_loss,
        "history": mixing_callback.history if mixing_callback else [],
    }
    del trainer, loader, dataset
    gc.collect()
    return result
