"""DoReMi-style online reweighting by excess loss over a reference model.

Reference: S. M. Xie, H. Pham, X. Dong, N. Du, H. Liu, Y. Lu, P. Liang, Q. V. Le, T. Ma,
A. W. Yu, "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining",
NeurIPS 2023 (arXiv:2305.10429), Algorithm 1.

DoReMi trains a proxy model with Group DRO against a reference model: domains where the
proxy's loss exceeds the reference's most are upweighted. Here the model being trained plays
the proxy's role and the reference losses ``L_ref`` are given per domain (e.g. measured
with a model trained on the initial mixture). Every ``interval`` steps, with the per-domain
loss ``L`` (training loss by default, validation loss with ``signal="val"``):

    lambda = max(L - L_ref, 0)                         (per-domain excess loss; 0 if unseen)
    alpha' = softmax(log alpha + eta * lambda)
    alpha  = (1 - c) alpha' + c / m                    (smoothing toward uniform, c = 1e-3)

The smoothed ``alpha`` is carried to the next update, as in the paper. The paper's final
output is the average of ``alpha`` over training (for a second run); online mixing uses the
current ``alpha`` directly. ``alpha`` starts at the initial weights (uniform unless given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from streammix.mixing.protocol import (
    Decision,
    Observation,
    check_num_domains,
    check_observation_step,
    check_positive_int,
    check_real,
    check_same_params,
    initial_or_uniform,
    observed_vector,
    policy_state_dict,
    restore_state,
)

DEFAULT_INTERVAL = 10
DEFAULT_SMOOTHING = 1e-3


def excess_loss(losses: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``max(L - L_ref, 0)``, and 0 where the loss is NaN (domain not seen)."""
    excess = np.where(np.isfinite(losses), losses - reference, 0.0)
    return np.maximum(excess, 0.0)


def doremi_step(
    weights: np.ndarray, excess: np.ndarray, eta: float, smoothing: float
) -> np.ndarray:
    """One exponentiated-gradient step on the domain weights, then smoothing."""
    with np.errstate(divide="ignore"):
        logits = np.log(weights) + eta * excess
    soft = np.exp(logits - logits.max())
    soft /= soft.sum()
    smoothed = (1.0 - smoothing) * soft + smoothing / weights.size
    return smoothed / smoothed.sum()


@dataclass(frozen=True, kw_only=True)
class DoremiPolicy:
    """Excess-loss reweighting against given per-domain reference losses."""

    name: ClassVar[str] = "doremi"
    reference_loss: tuple[float, ...]
    eta: float = 1.0
    smoothing: float = DEFAULT_SMOOTHING
    interval: int = DEFAULT_INTERVAL
    signal: Literal["train", "val"] = "train"

    def __post_init__(self) -> None:
        if not isinstance(self.reference_loss, Sequence) and not isinstance(
            self.reference_loss, np.ndarray
        ):
            raise TypeError(
                f"reference_loss must be a sequence of numbers, got {self.reference_loss!r}"
            )
        reference = tuple(
            check_real(x, "reference_loss entry", -np.inf, np.inf) for x in self.reference_loss
        )
        if not reference:
            raise ValueError("reference_loss must not be empty")
        object.__setattr__(self, "reference_loss", reference)
        check_real(self.eta, "eta", 0.0, np.inf)
        check_real(self.smoothing, "smoothing", 0.0, 1.0)
        check_positive_int(self.interval, "interval")
        if self.signal not in ("train", "val"):
            raise ValueError(f"signal must be 'train' or 'val', got {self.signal!r}")

    @property
    def needs_validation(self) -> bool:
        return self.signal == "val"

    def _params(self) -> dict:
        return {
            "reference_loss": list(self.reference_loss),
            "eta": float(self.eta),
            "smoothing": float(self.smoothing),
            "interval": self.interval,
            "signal": self.signal,
        }

    def init(self, num_domains: int, initial_weights: np.ndarray | None = None) -> dict:
        num_domains = check_num_domains(num_domains)
        if len(self.reference_loss) != num_domains:
            raise ValueError(
                f"reference_loss has {len(self.reference_loss)} entries but there are "
                f"{num_domains} domains"
            )
        return {
            "num_domains": num_domains,
            "params": self._params(),
            "next_step": 0,
            "weights": initial_or_uniform(initial_weights, num_domains),
        }

    def _decide(self, state: dict, info: dict[str, float]) -> tuple[Decision, dict]:
        decision = Decision(
            weights=state["weights"],
            num_steps=self.interval,
            evaluate=self.needs_validation,
            phase="doremi",
            info=info,
        )
        return decision, {**state, "next_step": state["next_step"] + self.interval}

    def start(self, state: dict) -> tuple[Decision, dict]:
        return self._decide(state, {})

    def update(self, state: dict, observation: Observation) -> tuple[Decision, dict]:
        check_observation_step(state, observation)
        m = state["num_domains"]
        name = "val_loss" if self.signal == "val" else "train_loss"
        losses = observed_vector(observation, name, m)
        excess = excess_loss(losses, np.array(self.reference_loss))
        weights = doremi_step(state["weights"], excess, float(self.eta), float(self.smoothing))
        info = {f"excess_{i}": x for i, x in enumerate(excess.tolist())}
        return self._decide({**state, "weights": weights}, info)

    def state_dict(self, state: dict) -> dict:
        return policy_state_dict(self.name, state)

    def load_state_dict(self, obj: dict) -> dict:
        state = restore_state(self.name, obj, ("weights",))
        check_same_params(state["params"], self._params(), self.name)
        return state
