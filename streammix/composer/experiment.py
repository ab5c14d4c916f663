"""One small, complete training run over a streammix build, used by the demo and benchmarks.

A run trains a randomly initialised GPT-2 (``streammix.composer.model``) with Composer on a
``StreamMixDataset`` under one mixing recipe, then measures held-out loss per domain on each
domain's ``-val`` split (token-weighted mean cross-entropy, perplexity = exp of it):

* ``static``: fixed domain weights (``weights=None`` = natural proportions, or e.g. uniform
  for stratified sampling), optionally with SampleMix repeat counts (``sample_counts``);
* any online policy name (``aioli``, ``odm``, ``doremi``, ...) driven by ``OnlineMixing``;
* ``opmix``: OP-Mix, driven by ``OpMixProbing`` (LoRA probes of the model being trained,
  configured by ``probe``; its cost is in the history's ``info``).

With ``packed``, training reads domain-pure blocks of exactly ``seq_len`` tokens cut from
each domain's stream of documents (``MixingConfig(sequence_length=seq_len,
separator_id=...)``, ``packing="domain"``; the separator is ``separator_id``, or ``pad_id``,
the tokenizer's end-of-text, when not given), so the weights and the per-domain counts are
token shares, every position is a target and ``steps * batch_size * seq_len`` is the run's
exact token budget; without it, each document is cut at ``seq_len`` and padded. Held-out
documents are evaluated one per row (truncated to ``seq_len``) either way.
The learning rate follows ``lr_schedule``: ``"constant"`` (the default: ``lr`` at every step,
no warmup), ``"cosine"`` (linear warmup from 0 over ``lr_warmup_fraction`` of the steps, then
a cosine decay to ``lr_final_fraction * lr`` at the last step: Composer's
``CosineAnnealingWithWarmupScheduler``) or ``"linear"`` (the same warmup, then a straight
line down to the same floor: ``LinearWithWarmupScheduler``). With a constant rate a small
model's final weights depend heavily on the last few batches; a decay averages that out,
as pretraining runs do. Composer steps the scheduler at the end of every batch, before its
step count moves on, so batch ``i`` trains at the schedule's value after ``i - 1`` steps (with
a warmup the first two batches at 0) and the result's ``final_lr`` is the value after
``steps - 1`` (within 0.1% of the floor for 240 steps with 5% warmup).
``device="gpu"`` trains on the GPU (Composer's device name), optionally with a
``precision`` such as ``"amp_bf16"``; held-out batches follow the model to its device.

Everything is seeded: the model initialisation, the order and the policy.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from composer import Trainer
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.optim import (
    ComposerScheduler,
    CosineAnnealingWithWarmupScheduler,
    DecoupledAdamW,
    LinearWithWarmupScheduler,
)
from torch.utils.data import DataLoader

from streammix.composer.callback import OnlineMixing
from streammix.composer.lora_probes import ProbeConfig
from streammix.composer.model import LMCollator, tiny_gpt2
from streammix.composer.opmix import OpMixProbing
from streammix.dataset.config import MixingConfig
from streammix.dataset.dataset import StreamMixDataset

LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    build: Path
    out: Path
    steps: int
    policy: str = "static"                       # "static" or an online policy name
    policy_options: Mapping[str, Any] = field(default_factory=dict)
    probe: ProbeConfig | None = None             # OP-Mix's LoRA probes (policy "opmix")
    weights: Mapping[str, float] | None = None   # static weights; None = natural
    sample_counts: Path | None = None            # SampleMix plan file
    seed: int = 0
    seq_len: int = 128
    packed: bool = False                        # domain-pure blocks of seq_len tokens
    batch_size: int = 16
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    lr: float = 3e-3
    lr_schedule: str = "constant"                # "constant", "cosine" or "linear" (see above)
    lr_warmup_fraction: float = 0.0              # share of the steps warming up (cosine/linear)
    lr_final_fraction: float = 0.1               # lr at the last step / lr (cosine/linear)
    vocab_size: int = 4096
    pad_id: int = 0
    val_samples: int = 64
    num_workers: int = 0
    separator_id: int | None = None             # token after every packed document (None: pad_id)
    device: str = "cpu"                         # Composer device: "cpu" or "gpu"
    precision: str | None = None                # Composer precision, e.g. "amp_bf16"
    verbose: bool = False                       # print decisions and progress
    progress_every_s: float = 5.0               # seconds between progress lines (verbose)

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, "
                             f"got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_warmup_fraction < 1.0:
            raise ValueError("lr_warmup_fraction must be in [0, 1), "
                             f"got {self.lr_warmup_fraction}")
        if not 0.0 <= self.lr_final_fraction <= 1.0:
            raise ValueError("lr_final_fraction must be in [0, 1], "
                             f"got {self.lr_final_fraction}")


def lr_scheduler(config: ExperimentConfig) -> ComposerScheduler | None:
    """Composer's scheduler for ``config.lr_schedule`` (None: the constant rate)."""
    if config.lr_schedule == "constant":
        return None
    warmup = f"{round(config.lr_warmup_fraction * config.steps)}ba"
    if config.lr_schedule == "cosine":
        return CosineAnnealingWithWarmupScheduler(t_warmup=warmup,
                                                  alpha_f=config.lr_final_fraction)
    return LinearWithWarmupScheduler(t_warmup=warmup, alpha_f=config.lr_final_fraction)


def _domain_values(names: Sequence[str], values: Sequence[float | None] | None,
                   fmt: str) -> str:
    if values is None:
        return ""
    return " | ".join(f"{n} {format(v, fmt)}" for n, v in zip(names, values) if v is not None)


class PrintDecisions(Callback):
    """Prints each OnlineMixing decision that training uses: weights and the losses behind it.

    Probe decisions (a phase starting with ``probe``: a few steps that measure a domain, as
    in Aioli's LearnParams) are counted, not printed one by one. A decision made at or after
    ``max_steps`` never trains (the run ends there) and is not printed.
    """

    def __init__(self, mixing: OnlineMixing | OpMixProbing, *, max_steps: int) -> None:
        self.mixing = mixing
        self.max_steps = max_steps
        self.printed = 0
        self.probes = 0

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event not in (Event.BATCH_END, Event.FIT_START):
            return
        names = self.mixing._dataset.domain_names if self.mixing._dataset else ()
        while self.printed < len(self.mixing.history):
            record = self.mixing.history[self.printed]
            self.printed += 1
            step = int(record["step"])
            kind = "held-out" if record.get("val_loss") else "training"
            losses = _domain_values(names, record.get("val_loss") or record.get("train_loss"),
                                    ".3f")
            if step >= self.max_steps:
                continue  # measured at the end; never trained on
            if str(record["phase"]).startswith("probe"):
                self.probes += 1
                continue
            probed = f" after {self.probes} probes" if self.probes else ""
            self.probes = 0
            until = min(self.max_steps, step + int(record.get("num_steps") or 0))
            print(f"   step {step:>5} {record['phase']} decision{probed}, used for steps "
                  f"{step}-{until}:", flush=True)
            print(f"         weights        {_domain_values(names, record['weights'], '.3f')}",
                  flush=True)
            effect = [record["info"].get(f"abar_colsum_{d}") for d in range(len(names))]
            if all(e is not None for e in effect):
                print(f"         probe effect   {_domain_values(names, effect, '.3f')}  "
                      "(share of the held-out loss drop the probes credit to each domain)",
                      flush=True)
            if losses:
                print(f"         {kind + ' loss':<14} {losses}", flush=True)


class PrintProgress(Callback):
    """Every ``every_s`` seconds (and at the last step): step, loss, tokens/s and ETA.

    The loss is the mean training loss of the steps since the previous line; tokens are the
    batch's target tokens (labels other than -100); the ETA extrapolates the time per step
    so far, evaluation passes of the mixing policy included.
    """

    def __init__(self, *, max_steps: int, every_s: float = 5.0) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self.max_steps = max_steps
        self.every_s = every_s
        self._started = 0.0
        self._last = 0.0
        self._losses: list[float] = []
        self._tokens = 0

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.FIT_START:
            self._started = self._last = time.perf_counter()
            return
        if event != Event.BATCH_END:
            return
        labels = state.batch["labels"] if isinstance(state.batch, Mapping) else None
        if labels is not None:
            self._tokens += int((labels[:, 1:] != -100).sum())
        loss = state.loss
        if isinstance(loss, torch.Tensor):
            self._losses.append(float(loss.detach()))
        now = time.perf_counter()
        step = int(state.timestamp.batch)
        if now - self._last < self.every_s and step < self.max_steps:
            return
        per_step = (now - self._started) / max(step, 1)
        eta = per_step * (self.max_steps - step)
        mean_loss = sum(self._losses) / len(self._losses) if self._losses else math.nan
        print(f"   step {step:>5}/{self.max_steps}  loss {mean_loss:6.3f}  "
              f"{self._tokens / (now - self._last):8,.0f} tokens/s  "
              f"ETA {int(eta) // 60}:{int(eta) % 60:02d}", flush=True)
        self._last, self._losses, self._tokens = now, [], 0


def held_out_loss(model: torch.nn.Module, dataset: StreamMixDataset, collate: LMCollator,
                  *, per_domain: int, batch_size: int = 16) -> dict[str, float]:
    """Token-weighted mean held-out cross-entropy per domain."""
    from streammix.composer.model import causal_lm_loss_sums

    result = {}
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for name, samples in dataset.held_out_samples(per_domain).items():
            total, tokens = 0.0, 0
            for i in range(0, len(samples), batch_size):
                batch = {k: v.to(device) for k, v in collate(samples[i:i + batch_size]).items()}
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
                          publish_timeout_s=300,
                          sequence_length=config.seq_len if config.packed else None,
                          separator_id=(config.pad_id if config.separator_id is None
                                        else config.separator_id) if config.packed else None)
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
    mixing_callback: OnlineMixing | OpMixProbing | None = None
    if config.policy == "opmix":
        mixing_callback = OpMixProbing(policy_options=dict(config.policy_options),
                                       probe=config.probe, history_path=out / "history.jsonl")
    elif online:
        mixing_callback = OnlineMixing(config.policy, policy_options=dict(config.policy_options),
                                       val_samples=min(32, config.val_samples), val_batch_size=16,
                                       history_path=out / "history.jsonl")
    if mixing_callback is not None:
        callbacks.append(mixing_callback)
        if config.verbose:
            callbacks.append(PrintDecisions(mixing_callback, max_steps=config.steps))
    if config.verbose:
        callbacks.append(PrintProgress(max_steps=config.steps, every_s=config.progress_every_s))
    scheduler = lr_scheduler(config)
    trainer = Trainer(model=model, optimizers=DecoupledAdamW(model.parameters(), lr=config.lr),
                      schedulers=scheduler, train_dataloader=loader, max_duration=f"{config.steps}ba",
                      callbacks=callbacks, device=config.device, precision=config.precision,
                      seed=config.seed, progress_bar=False, log_to_console=False)
    started = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - started
    # After the last step Composer has stepped the scheduler once more: the floor when decayed.
    final_lr = float(trainer.state.optimizers[0].param_groups[0]["lr"])
    losses = held_out_loss(model, dataset, collate, per_domain=config.val_samples)
    trainer.close()
    mean_loss = sum(losses.values()) / len(losses)
    result = {
        "policy": config.policy, "seed": config.seed, "steps": config.steps,
        "packed": config.packed, "lr_schedule": config.lr_schedule, "final_lr": final_lr,
        "train_seconds": seconds, "held_out_loss": losses,
        "perplexity": {n: math.exp(v) for n, v in losses.items()},
        "mean_perplexity": sum(math.exp(v) for v in losses.values()) / len(losses),
        "mean_loss": mean_loss,
        "history": mixing_callback.history if mixing_callback else [],
    }
    del trainer, loader, dataset
    gc.collect()
    return result
