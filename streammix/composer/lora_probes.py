"""LoRA probes for OP-Mix: per-domain adapters on a model snapshot and their interpolation.

Used by :class:`streammix.composer.opmix.OpMixProbing` (OP-Mix, Hu et al. 2026,
arXiv:2605.15220). ``attach_adapters`` wraps the Hugging Face model inside a Composer model in
a ``peft`` PeftModel with one LoRA adapter per domain (``r``, ``alpha``; ``lora_dropout = 0``);
``train_adapter`` trains one of them with AdamW on seeded batches of that domain;
``adapter_deltas`` reads every adapter's weight delta ``dW_j = (alpha / r) B_j A_j`` through
peft's ``get_delta_weight`` (which transposes for GPT-2's Conv1D), and ``set_interpolation``
sets each adapted weight of the unloaded model to ``W + sum_j x_j dW_j`` (summed in float64),
the proxy of mixture ``x``. ``held_out_losses`` is the mean per-token loss per domain.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from composer.core import State

from streammix.composer.token_loss import per_domain_token_losses

PURPOSE_PROBE = 0x50524F42  # "PROB": seeds of the LoRA initialization and probe batches


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """How the LoRA probes are trained and evaluated (reference: ``r=16, alpha=32``)."""

    r: int = 16
    alpha: float = 32.0
    steps: int = 20
    lr: float = 1e-3
    batch_size: int = 8
    train_samples: int = 256
    val_samples: int = 32
    val_batch_size: int = 8
    target_modules: tuple[str, ...] | None = None  # None: peft's default for the architecture
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("r", "steps", "batch_size", "train_samples", "val_samples",
                     "val_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProbeConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("alpha", "lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"ProbeConfig.{name} must be a positive number, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ProbeConfig.seed must be an int >= 0, got {self.seed!r}")
        if self.target_modules is not None:
            object.__setattr__(self, "target_modules", tuple(self.target_modules))


# ----------------------------------------------------------------------------- LoRA helpers


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def adapter_name(domain: int) -> str:
    return f"domain{domain}"


def attach_adapters(composer_model: torch.nn.Module, num_domains: int,
                    config: ProbeConfig) -> Any:
    """Wrap ``composer_model.model`` (a Hugging Face model) in a PeftModel with one LoRA
    adapter per domain; returns the PeftModel (also set as ``composer_model.model``)."""
    from peft import LoraConfig, get_peft_model

    inner = getattr(composer_model, "model", None)
    if not isinstance(inner, torch.nn.Module):
        raise TypeError("OP-Mix probes need a Composer model whose .model is the Hugging Face "
                        "model (streammix.composer.model.CausalLMModel or HuggingFaceModel)")
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=0.0, bias="none",
                      target_modules=list(config.target_modules) if config.target_modules
                      else None, init_lora_weights=True)
    with warnings.catch_warnings():  # GPT-2's Conv1D: peft sets fan_in_fan_out itself
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")
        peft_model = get_peft_model(inner, lora, adapter_name=adapter_name(0))
        for j in range(1, num_domains):
            peft_model.add_adapter(adapter_name(j), lora)
    composer_model.model = peft_model
    return peft_model


@dataclass
class AdaptedLayer:
    """One adapted weight: its module, the snapshot's weight and each adapter's delta."""

    module: torch.nn.Module
    base: torch.Tensor
    deltas: list[torch.Tensor]


def adapter_deltas(peft_model: Any, num_domains: int) -> list[AdaptedLayer]:
    """``dW_j`` of every LoRA layer, via peft's ``get_delta_weight`` (layout-aware)."""
    from peft.tuners.lora import LoraLayer

    layers = []
    with torch.no_grad():
        for module in peft_model.modules():
            if isinstance(module, LoraLayer):
                base_layer = module.get_base_layer()
                deltas = [module.get_delta_weight(adapter_name(j)).detach().clone()
                          for j in range(num_domains)]
                layers.append(AdaptedLayer(base_layer, base_layer.weight.detach().clone(),
                                           deltas))
    if not layers:
        raise ValueError("peft attached no LoRA layer: set ProbeConfig.target_modules")
    return layers


def set_interpolation(layers: Sequence[AdaptedLayer], mixture: Sequence[float]) -> None:
    """Every adapted weight becomes ``W + sum_j x_j dW_j`` (float64 sum, cast back)."""
    with torch.no_grad():
        for layer in layers:
            merged = layer.base.double()
            for weight, delta in zip(mixture, layer.deltas):
                if weight != 0.0:
                    merged = merged + float(weight) * delta.double()
            layer.module.weight.copy_(merged.to(layer.module.weight.dtype))


def domain_batches(samples: Sequence[Mapping[str, Any]], collate: Any,
                    batch_size: int) -> list[Any]:
    return [collate(list(samples[i:i + batch_size])) for i in range(0, len(samples), batch_size)]


def train_adapter(model: torch.nn.Module, peft_model: Any, domain: int,
                  samples: Sequence[Mapping[str, Any]], collate: Any, state: State,
                  config: ProbeConfig, seed: int) -> None:
    """``config.steps`` AdamW steps on adapter ``domain`` only, over seeded batches."""
    peft_model.set_adapter(adapter_name(domain))
    params = [p for n, p in peft_model.named_parameters()
              if p.requires_grad and f".{adapter_name(domain)}." in n]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    rng = np.random.default_rng([seed, PURPOSE_PROBE, domain])
    order: list[int] = []
    model.train()
    for _ in range(config.steps):
        if len(order) < config.batch_size:
            order.extend(rng.permutation(len(samples)).tolist())
        chosen, order = order[:config.batch_size], order[config.batch_size:]
        batch = state.device.batch_to_device(collate([samples[i] for i in chosen]))
        loss = model.loss(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def held_out_losses(model: torch.nn.Module, batches: Mapping[str, list[Any]],
                    state: State) -> tuple[np.ndarray, int]:
    """Mean per-token held-out loss of every domain (float64) and the batches run.

    Per-token losses come from the logits (``streammix.composer.token_loss``), so any causal
    LM works; a batch's tokens all count for the domain it was collected for.
    """
    model.eval()
    losses, passes = [], 0
    with torch.no_grad():
        for name_batches in batches.values():
            total, count = 0.0, 0.0
            for batch in name_batches:
                batch = state.device.batch_to_device(batch)
                single = dict(batch, domain=torch.zeros_like(batch["domain"]))
                single.pop("token_domain", None)
                sums, tokens, _ = per_domain_token_losses(model(batch), single, 1)
                total += float(sums[0])
                count += float(tokens[0])
                passes += 1
            losses.append(total / count)
    return np.asarray(losses), passes
