"""Per-domain training signals from the logits a training step already computed.

Online mixing needs, per domain, the sum of next-token losses and the number of target
tokens in each batch. Any causal LM gives them from its output logits and the batch's
labels, with no model-specific method: position ``t`` predicts ``labels[t + 1]`` (the
Hugging Face convention, ``-100`` = not a target), so

    CE[b, t] = -log softmax(logits[b, t])[labels[b, t + 1]]      for targets only

and a target token belongs to the domain of the token it predicts: the batch's
``token_domain[b, t + 1]`` when blocks mix domains (mixed packing), else the row's
``domain[b]``. This runs under ``no_grad`` on the logits the step already has (no second
forward pass), one row at a time so the float32 copy of the logits stays one row large.
A batch without ``labels`` uses ``input_ids`` with ``attention_mask`` zeros excluded.

Returned per domain: loss sums, target tokens and *rows*: each row counts 1, split between
domains in proportion to their target tokens (1 for a one-domain row), which is the
"samples per domain" the policies' importance weights need.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def logits_of(outputs: Any) -> torch.Tensor:
    """The ``[B, T, V]`` logits of a model's forward output (tensor, mapping or object)."""
    if isinstance(outputs, torch.Tensor):
        logits = outputs
    elif isinstance(outputs, Mapping) and "logits" in outputs:
        logits = outputs["logits"]
    elif getattr(outputs, "logits", None) is not None:
        logits = outputs.logits
    else:
        raise TypeError(
            "online mixing reads per-token losses from the model's output logits, but the "
            f"forward output ({type(outputs).__name__}) has none; a Hugging Face causal LM "
            "(e.g. in composer.models.HuggingFaceModel) returns them"
        )
    if logits.dim() != 3:
        raise ValueError(f"expected logits [batch, tokens, vocab], got {tuple(logits.shape)}")
    return logits


def _labels_of(batch: Mapping[str, Any]) -> torch.Tensor:
    if "labels" in batch:
        return batch["labels"]
    if "input_ids" not in batch:
        raise KeyError("the batch has neither 'labels' nor 'input_ids'")
    labels = batch["input_ids"].clone()
    mask = batch.get("attention_mask")
    if mask is not None:
        labels[mask == 0] = IGNORE_INDEX
    return labels


def per_domain_token_losses(outputs: Any, batch: Mapping[str, Any], num_domains: int
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss sums, target tokens, rows)``, each float64 ``[num_domains]``, of one batch."""
    logits = logits_of(outputs).detach()
    labels = _labels_of(batch).to(logits.device)
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits "
                         f"{tuple(logits.shape[:2])}")
    if "token_domain" in batch:
        token_domain = batch["token_domain"].to(logits.device).long()
    elif "domain" in batch:
        token_domain = batch["domain"].to(logits.device).long()[:, None].expand_as(labels)
    else:
        raise KeyError("the batch carries no 'domain' (StreamMixDataset samples have it; "
                       "the collate function must keep it)")
    sums = torch.zeros(num_domains, dtype=torch.float64, device=logits.device)
    tokens = torch.zeros_like(sums)
    rows = torch.zeros_like(sums)
    with torch.no_grad():
        for b in range(logits.shape[0]):
            targets = labels[b, 1:]
            valid = targets != IGNORE_INDEX
            count = int(valid.sum())
            if count == 0:
                continue
            losses = F.cross_entropy(logits[b, :-1][valid].float(), targets[valid].long(),
                                     reduction="none").double()
            domains = token_domain[b, 1:][valid]
            ones = torch.ones_like(losses)
            sums.index_add_(0, domains, losses)
            tokens.index_add_(0, domains, ones)
            rows.index_add_(0, domains, ones / count)
    return sums, tokens, rows
