"""A tiny GPT-2 as a Composer model, with per-sample losses for online data mixing.

Causal language modelling: position ``t`` of a sequence predicts token ``t + 1``. Batches
carry ``labels`` aligned with ``input_ids`` (the Hugging Face convention; ``-100`` marks a
position that is not a target, e.g. padding); the loss shifts them itself:

    CE[b, t] = -log softmax(logits[b, t])[labels[b, t + 1]]     for t < T - 1
    per-sample loss[b] = sum_t CE[b, t] / #targets[b]            (0.0 when #targets[b] = 0)
    batch loss         = sum_{b,t} CE[b, t] / sum_b #targets[b]

so the token-count-weighted mean of the per-sample losses is the batch loss. The online
mixing callback groups per-sample losses by the batch's ``domain`` ids to get per-domain
training losses without an extra forward pass.

:func:`tiny_gpt2` builds a randomly initialised ``GPT2LMHeadModel`` under
``torch.random.fork_rng`` with ``torch.manual_seed(seed)``: the same seed gives the same
weights, and the caller's global RNG state is left as it was. Dropout defaults to 0 (tiny
models on tiny data; it also makes a training forward equal to an eval forward).

:class:`LMCollator` turns samples into a batch; a class (not a closure) so that it pickles
into DataLoader worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity
from composer.models import ComposerModel
from torchmetrics import Metric
from transformers import GPT2Config, GPT2LMHeadModel

IGNORE_INDEX = -100


def causal_lm_loss_sums(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample sum of next-token cross-entropy and number of target tokens.

    ``logits``: float ``[B, T, V]``; ``labels``: int ``[B, T]`` aligned with the inputs,
    ``-100`` where position ``t`` is not a target. Returns two ``[B]`` tensors (float32 sums,
    int64 counts).
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"need logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    batch, length, vocab = logits.shape
    if length < 2:
        zeros = torch.zeros(batch, device=logits.device)
        return zeros, torch.zeros(batch, dtype=torch.int64, device=logits.device)
    targets = labels[:, 1:]
    token_losses = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(batch, length - 1)
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return token_losses.sum(dim=1), counts


def per_sample_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sample, ``[B]``; 0.0 for a sample without targets."""
    sums, counts = causal_lm_loss_sums(logits, labels)
    return sums / counts.clamp(min=1).to(sums.dtype)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over all target tokens of the batch (a scalar)."""
    sums, counts = causal_lm_loss_sums(logits, labels)
    return sums.sum() / counts.sum().clamp(min=1).to(sums.dtype)


def _logits_of(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):  # Hugging Face ModelOutput is a Mapping
        return outputs["logits"]
    raise TypeError(f"outputs must be a tensor or carry logits, got {type(outputs).__name__}")


class CausalLMModel(ComposerModel):
    """A Hugging Face causal LM behind Composer's model interface.

    The batch is a dict with ``input_ids``, ``labels`` and optionally ``attention_mask`` and
    ``domain`` (ignored by the model; used by the mixing callback).
    """

    def __init__(self, model: GPT2LMHeadModel, *, compute_train_metrics: bool = False) -> None:
        super().__init__()
        self.model = model
        self.compute_train_metrics = compute_train_metrics

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))

    def loss(
        self, outputs: Any, batch: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        return causal_lm_loss(_logits_of(outputs), batch["labels"])

    def per_sample_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean token cross-entropy of each sample of the batch, ``[batch]``."""
        return per_sample_causal_lm_loss(_logits_of(outputs), batch["labels"])

    def eval_forward(self, batch: Mapping[str, torch.Tensor], outputs: Any | None = None) -> Any:
        return outputs if outputs is not None else self.forward(batch)

    def update_metric(
        self, batch: Mapping[str, torch.Tensor], outputs: Any, metric: Metric
    ) -> None:
        logits = _logits_of(outputs)
        vocab = logits.shape[-1]
        shifted_logits = logits[:, :-1].reshape(-1, vocab).float()
        targets = batch["labels"][:, 1:].reshape(-1)
        metric.update(shifted_logits, targets)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        if is_train and not self.compute_train_metrics:
            return {}
        return {
            "LanguageCrossEntropy": LanguageCrossEntropy(ignore_index=IGNORE_INDEX),
            "LanguagePerplexity": LanguagePerplexity(ignore_index=IGNORE_INDEX),
        }


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def tiny_gpt2(
    *,
    vocab_size: int,
    max_seq_len: int,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 128,
    seed: int,
    dropout: float = 0.0,
    compute_train_metrics: bool = False,
) -> CausalLMModel:
    """A randomly initialised GPT-2 (seeded, global RNG untouched) wrapped for Composer."""
    for name, value in (
        ("vocab_size", vocab_size),
        ("max_seq_len", max_seq_len),
        ("n_layer", n_layer),
        ("n_head", n_head),
        ("n_embd", n_embd),
    ):
        _check_positive_int(name, value)
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=max_seq_len,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return CausalLMModel(model, compute_train_metrics=compute_train_metrics)


def _as_int64_ids(value: Any, field: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        ids = value.to(torch.int64)
    else:
        array = np.asarray(value)
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"{field} must hold integers, got dtype {array.dtype}")
        ids = torch.from_numpy(array.astype(np.int64, copy=True))
    if ids.dim() != 1:
        raise ValueError(f"{field} must be one-dimensional, got shape {tuple(ids.shape)}")
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError(f"{field} must be non-negative token ids")
    return ids


class LMCollator:
    """Batch samples for :class:`CausalLMModel`; picklable for DataLoader workers.

    Each sample is a mapping with an int ``domain`` and either ``input_ids`` (a block of
    exactly ``max_seq_len`` tokens, e.g. from packing: every position is a target) or
    ``tokens`` (any length: truncated to ``max_seq_len``, right-padded with ``pad_id``,
    padding masked out of attention and labelled -100). Returns int64 ``input_ids``,
    ``labels``, ``attention_mask`` of shape ``[B, max_seq_len]`` and int64 ``domain`` ``[B]``,
    plus ``token_domain`` ``[B, max_seq_len]`` when samples carry it (mixed packing).
    """

    def __init__(self, *, max_seq_len: int, pad_id: int) -> None:
        _check_positive_int("max_seq_len", max_seq_len)
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
            raise ValueError(f"pad_id must be a non-negative int, got {pad_id!r}")
        self.max_seq_len = max_seq_len
        self.pad_id = pad_id

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(samples) == 0:
            raise ValueError("cannot collate an empty list of samples")
        rows = [self._row(i, sample) for i, sample in enumerate(samples)]
        batch = {
            "input_ids": torch.stack([r[0] for r in rows]),
            "labels": torch.stack([r[1] for r in rows]),
            "attention_mask": torch.stack([r[2] for r in rows]),
            "domain": torch.tensor([r[3] for r in rows], dtype=torch.int64),
        }
        if any("token_domain" in sample for sample in samples):  # mixed packing
            batch["token_domain"] = torch.stack([
                _as_int64_ids(sample.get("token_domain", np.full(self.max_seq_len,
                                                                 rows[i][3])), "token_domain")
                for i, sample in enumerate(samples)])
        return batch

    def _row(
        self, index: int, sample: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        if not isinstance(sample, Mapping):
            raise TypeError(f"sample {index} must be a mapping, got {type(sample).__name__}")
        domain = sample.get("domain")
        if isinstance(domain, torch.Tensor | np.ndarray) and domain.ndim == 0:
            domain = domain.item()
        if isinstance(domain, bool) or not isinstance(domain, int | np.integer):
            raise ValueError(f"sample {index} needs an int 'domain', got {domain!r}")
        length = self.max_seq_len
        if "input_ids" in sample:
            ids = _as_int64_ids(sample["input_ids"], "input_ids")
            if ids.numel() != length:
                raise ValueError(
                    f"sample {index}: input_ids must be a block of max_seq_len={length} tokens, got {ids.numel()}"
                )
            return ids, ids.clone(), torch.ones(length, dtype=torch.int64), int(domain)
        if "tokens" not in sample:
            raise ValueError(f"sample {index} has neither 'input_ids' nor 'tokens'")
        tokens = _as_int64_ids(sample["tokens"], "tokens")[:length]
        used = tokens.numel()
        ids = torch.full((length,), self.pad_id, dtype=torch.int64)
        ids[:used] = tokens
        labels = torch.full((length,), IGNORE_INDEX, dtype=torch.int64)
        labels[:used] = tokens
        mask = torch.zeros(length, dtype=torch.int64)
        mask[:used] = 1
        return ids, labels, mask, int(domain)


def lm_collate(
    samples: Sequence[Mapping[str, Any]], *, max_seq_len: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Collate ``samples`` as :class:`LMCollator` does (use the class for DataLoaders)."""
    return LMCollator(max_seq_len=max_seq_len, pad_id=pad_id)(samples)
