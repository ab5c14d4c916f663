"""Direct Preference Optimization (DPO) as a Composer model, with per-domain reward metrics.

DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly
a Reward Model", arXiv:2305.18290) trains a policy ``pi`` on preference pairs
``(x, y_w, y_l)`` (prompt, chosen, rejected) against a frozen reference ``pi_ref`` (the
policy's starting point) with

    log pi(y | x)  = sum over the response tokens y_t of log pi(y_t | x, y_<t)
    r(x, y)        = beta * (log pi(y | x) - log pi_ref(y | x))          (implicit reward)
    z              = r(x, y_w) - r(x, y_l)                                (reward margin)
    loss           = mean over pairs of -log sigmoid(z)

Prompt tokens and padding are no targets: only the response tokens enter ``log pi(y | x)``,
each predicted from everything before it (prompt and earlier response tokens). With
``label_smoothing = eps > 0`` the loss is the conservative DPO variant
``-(1 - eps) log sigmoid(z) - eps log sigmoid(-z)`` (Mitchell 2023, as in TRL); ``eps = 0``
is the paper's loss.

SimpleMix (2025, "SimpleMix: Frustratingly Simple Data Mixing for Preference Alignment")
trains exactly this loss on a per-example mix of on-policy pairs (sampled from the policy
and ranked by a reward) and off-policy pairs; in streammix the two kinds are two domains of
a ``StreamMixDataset`` and the mix is ``MixingConfig(domain_weights=...)``. The batch
therefore carries each pair's ``domain`` id, and the logged metrics are given overall and
per domain: the implicit rewards of chosen and rejected responses, the reward accuracy
(share of pairs with ``z > 0``) and the reward margin ``z``. A domain without pairs in the
measured window logs NaN.

One forward pass of the policy (with gradients) and one of the reference (without) score
chosen and rejected sequences together (``[2B, T]``). The reference is a deep copy of the
policy made at construction unless one is given (same class and parameter shapes); its
parameters never require gradients and it stays in eval mode (no dropout), also when the
trainer puts the model in training mode. It is part of the model's state, so checkpoints
hold it and a resumed run scores against the same reference.

:class:`DPOCollator` pads pairs: each sample holds ``prompt_tokens``, ``chosen_tokens`` and
``rejected_tokens`` (token ids, as ``streammix-build`` writes pair records) and a ``domain``;
prompt + response is right-padded to the longest sequence of the batch (chosen and
rejected to the same length), with ``labels = -100`` on prompt and padding positions.
A prompt longer than ``max_prompt_len`` keeps its last ``max_prompt_len`` tokens; a
response is cut so that prompt + response fits ``max_seq_len``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from composer.models import ComposerModel
from torchmetrics import Metric

from streammix.composer.model import IGNORE_INDEX, _as_int64_ids, _check_positive_int

SIDES = ("chosen", "rejected")
OUTPUT_KEYS = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "reference_chosen_logps",
    "reference_rejected_logps",
)
QUANTITIES = {
    "chosen_reward": "DPOChosenReward",
    "rejected_reward": "DPORejectedReward",
    "reward_accuracy": "DPORewardAccuracy",
    "reward_margin": "DPORewardMargin",
}


@dataclass(frozen=True, kw_only=True)
class DPOConfig:
    """The DPO loss: ``beta`` scales the implicit reward; ``label_smoothing`` in [0, 0.5)."""

    beta: float = 0.1
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float):
            raise TypeError(f"beta must be a number, got {type(self.beta).__name__}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a positive finite number, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


def sequence_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over target positions of ``log softmax(logits[b, t])[labels[b, t + 1]]``, ``[B]``.

    ``labels`` are aligned with the inputs (Hugging Face convention) and ``-100`` where a
    position is no target (prompt, padding). Computed in float32.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"need logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    batch, length, vocab = logits.shape
    if length < 2:
        return torch.zeros(batch, device=logits.device)
    token_nll = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(batch, length - 1)
    return -token_nll.sum(dim=1)


def dpo_terms(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    config: DPOConfig,
) -> dict[str, torch.Tensor]:
    """Per-pair DPO loss, implicit rewards, margin and accuracy (each ``[B]``)."""
    chosen_reward = config.beta * (policy_chosen_logps - reference_chosen_logps)
    rejected_reward = config.beta * (policy_rejected_logps - reference_rejected_logps)
    margin = chosen_reward - rejected_reward
    eps = config.label_smoothing
    loss = -(1.0 - eps) * F.logsigmoid(margin)
    if eps:
        loss = loss - eps * F.logsigmoid(-margin)
    return {
        "loss": loss,
        "chosen_reward": chosen_reward,
        "rejected_reward": rejected_reward,
        "reward_margin": margin,
        "reward_accuracy": (margin > 0).to(margin.dtype),
    }


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    config: DPOConfig,
) -> torch.Tensor:
    """Mean DPO loss over the pairs (a scalar)."""
    return dpo_terms(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        config,
    )["loss"].mean()


class DPOMetric(Metric):
    """Mean of one DPO quantity over the pairs seen, overall or of one domain id."""

    full_state_update = False

    def __init__(self, quantity: str, domain: int | None = None) -> None:
        super().__init__()
        if quantity not in QUANTITIES:
            raise ValueError(f"unknown DPO quantity {quantity!r}; known: {sorted(QUANTITIES)}")
        self.quantity = quantity
        self.domain = domain
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, domains: torch.Tensor) -> None:
        values = values.detach().float()
        if self.domain is not None:
            values = values[domains.to(values.device) == self.domain]
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        if float(self.count) == 0:
            return torch.tensor(float("nan"))
        return self.total / self.count


def _unwrap_causal_lm(model: torch.nn.Module, what: str) -> torch.nn.Module:
    """The Hugging Face module inside a Composer ``HuggingFaceModel`` or ``CausalLMModel``."""
    if isinstance(model, ComposerModel):
        inner = getattr(model, "model", None)
        if not isinstance(inner, torch.nn.Module):
            raise TypeError(f"the Composer {what} model has no Hugging Face module at .model")
        model = inner
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{what} must be a torch module, got {type(model).__name__}")
    return model


def _check_same_architecture(policy: torch.nn.Module, reference: torch.nn.Module) -> None:
    if type(policy) is not type(reference):
        raise ValueError(
            f"reference must have the policy's architecture: {type(reference).__name__} != {type(policy).__name__}"
        )
    policy_shapes = {n: tuple(p.shape) for n, p in policy.named_parameters()}
    reference_shapes = {n: tuple(p.shape) for n, p in reference.named_parameters()}
    if policy_shapes != reference_shapes:
        differ = sorted(set(policy_shapes.items()) ^ set(reference_shapes.items()))[:3]
        raise ValueError(f"reference parameters differ from the policy's, e.g. {differ}")


class DPOModel(ComposerModel):
    """A Hugging Face causal LM trained with DPO against a frozen reference (module docstring).

    Args:
        policy: the causal LM to train (a Hugging Face ``PreTrainedModel``, or a Composer
            ``HuggingFaceModel``/``CausalLMModel`` around one).
        reference: the frozen reference, same architecture; by default a deep copy of the
            policy at construction.
        config: the loss (``beta``, ``label_smoothing``).
        domain_names: names of the batch's ``domain`` ids (``dataset.domain_names``); each
            gets its own metrics ``DPORewardAccuracy/<name>`` etc. Without them, only the
            overall metrics.
        compute_train_metrics: log the metrics on training batches too (default True).
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        reference: torch.nn.Module | None = None,
        *,
        config: DPOConfig | None = None,
        domain_names: Sequence[str] | None = None,
        compute_train_metrics: bool = True,
    ) -> None:
        super().__init__()
        policy = _unwrap_causal_lm(policy, "policy")
        if reference is None:
            reference = copy.deepcopy(policy)
        else:
            reference = _unwrap_causal_lm(reference, "reference")
            if reference is policy:
                raise ValueError("reference must be a separate module from the policy")
            _check_same_architecture(policy, reference)
        if config is not None and not isinstance(config, DPOConfig):
            raise TypeError(f"config must be a DPOConfig, got {type(config).__name__}")
        names = list(domain_names) if domain_names is not None else []
        if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"domain_names must be distinct non-empty strings, got {names}")
        self.policy = policy
        self.reference = reference
        self.reference.requires_grad_(False)
        self.reference.eval()
        self.config = config if config is not None else DPOConfig()
        self.domain_names = tuple(names)
        self.compute_train_metrics = compute_train_metrics

    def train(self, mode: bool = True) -> DPOModel:
        super().train(mode)
        self.reference.eval()
        return self

    def _log_probs(self, module: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
        mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
        labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
        outputs = module(input_ids=ids, attention_mask=mask)
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits
        return sequence_log_probs(logits, labels)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [f"{s}_{k}" for s in SIDES for k in ("input_ids", "attention_mask", "labels")
                   if f"{s}_{k}" not in batch]
        if missing:
            raise KeyError(f"a DPO batch needs {missing} (use DPOCollator)")
        size = batch["chosen_input_ids"].shape[0]
        policy = self._log_probs(self.policy, batch)
        with torch.no_grad():
            reference = self._log_probs(self.reference, batch)
        return {
            "policy_chosen_logps": policy[:size],
            "policy_rejected_logps": policy[size:],
            "reference_chosen_logps": reference[:size],
            "reference_rejected_logps": reference[size:],
        }

    def terms(self, outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-pair loss, rewards, margin and accuracy from :meth:`forward`'s outputs."""
        if not isinstance(outputs, Mapping) or any(k not in outputs for k in OUTPUT_KEYS):
            raise TypeError(f"DPO outputs must be a mapping with {list(OUTPUT_KEYS)}")
        return dpo_terms(*(outputs[k] for k in OUTPUT_KEYS), self.config)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any
             ) -> torch.Tensor:
        return self.terms(outputs)["loss"].mean()

    def per_sample_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """DPO loss of each pair, ``[batch]`` (for ``OnlineMixing``)."""
        return self.terms(outputs)["loss"]

    def eval_forward(self, batch: Mapping[str, torch.Tensor], outputs: Any | None = None) -> Any:
        return outputs if outputs is not None else self.forward(batch)

    def update_metric(self, batch: Mapping[str, torch.Tensor], outputs: Any, metric: Metric
                      ) -> None:
        if not isinstance(metric, DPOMetric):
            raise TypeError(f"DPOModel updates DPOMetric only, got {type(metric).__name__}")
        values = self.terms(outputs)[metric.quantity]
        domains = batch.get("domain")
        if domains is None:
            domains = torch.full_like(values, -1, dtype=torch.int64)
        metric.update(values, domains)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        if is_train and not self.compute_train_metrics:
            return {}
        metrics: dict[str, Metric] = {}
        for quantity, name in QUANTITIES.items():
            metrics[name] = DPOMetric(quantity)
            for domain, domain_name in enumerate(self.domain_names):
                metrics[f"{name}/{domain_name}"] = DPOMetric(quantity, domain)
        return metrics


def _domain_of(index: int, sample: Mapping[str, Any]) -> int:
    domain = sample.get("domain")
    if isinstance(domain, torch.Tensor | np.ndarray) and domain.ndim == 0:
        domain = domain.item()
    if isinstance(domain, bool) or not isinstance(domain, int | np.integer):
        raise ValueError(f"sample {index} needs an int 'domain', got {domain!r}")
    return int(domain)


class DPOCollator:
    """Pad preference pairs into a DPO batch (module docstring); picklable for workers.

    Returns int64 ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_labels`` and the
    same for ``rejected``, all ``[B, T]`` with ``T`` the longest prompt + response of the
    batch, and ``domain`` ``[B]``.
    """

    def __init__(self, *, max_seq_len: int, pad_id: int, max_prompt_len: int | None = None
                 ) -> None:
        _check_positive_int("max_seq_len", max_seq_len)
        if max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2, got {max_seq_len}")
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
            raise ValueError(f"pad_id must be a non-negative int, got {pad_id!r}")
        if max_prompt_len is None:
            max_prompt_len = max_seq_len // 2
        _check_positive_int("max_prompt_len", max_prompt_len)
        if max_prompt_len >= max_seq_len:
            raise ValueError(
                f"max_prompt_len ({max_prompt_len}) must be < max_seq_len ({max_seq_len})"
            )
        self.max_seq_len = max_seq_len
        self.pad_id = pad_id
        self.max_prompt_len = max_prompt_len

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(samples) == 0:
            raise ValueError("cannot collate an empty list of samples")
        rows = [self._row(i, s) for i, s in enumerate(samples)]
        length = max(len(seq) for row in rows for seq, _ in row[0])
        batch: dict[str, torch.Tensor] = {}
        for side_index, side in enumerate(SIDES):
            ids = torch.full((len(rows), length), self.pad_id, dtype=torch.int64)
            labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.int64)
            mask = torch.zeros((len(rows), length), dtype=torch.int64)
            for b, (sequences, _) in enumerate(rows):
                seq, prompt_len = sequences[side_index]
                ids[b, : len(seq)] = seq
                labels[b, prompt_len : len(seq)] = seq[prompt_len:]
                mask[b, : len(seq)] = 1
            batch[f"{side}_input_ids"] = ids
            batch[f"{side}_attention_mask"] = mask
            batch[f"{side}_labels"] = labels
        batch["domain"] = torch.tensor([row[1] for row in rows], dtype=torch.int64)
        return batch

    def _row(self, index: int, sample: Mapping[str, Any]
             ) -> tuple[list[tuple[torch.Tensor, int]], int]:
        if not isinstance(sample, Mapping):
            raise TypeError(f"sample {index} must be a mapping, got {type(sample).__name__}")
        fields = {}
        for name in ("prompt", *SIDES):
            key = f"{name}_tokens"
            if key not in sample:
                raise ValueError(f"sample {index} lacks {key!r} (a preference pair is needed)")
            fields[name] = _as_int64_ids(sample[key], key)
            if fields[name].numel() == 0:
                raise ValueError(f"sample {index}: {key} is empty")
        prompt = fields["prompt"][-self.max_prompt_len :]
        room = self.max_seq_len - prompt.numel()
        sequences = [(torch.cat([prompt, fields[s][:room]]), prompt.numel()) for s in SIDES]
        return sequences, _domain_of(index, sample)
