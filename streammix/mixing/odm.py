"""ODM: Online Data Mixing as an Exp3 bandit over domains (Albalak et al. 2023).

Reference: A. Albalak, L. Pan, C. Raffel, W. Y. Wang, "Efficient Online Data Mixing For
Language Model Pre-Training", arXiv:2312.02406 (Algorithm 1). Each domain is an arm; its
reward is the training loss of the samples drawn from it (a high loss means the model still
has much to learn there), so domains with a higher loss get sampled more. No extra forward
passes: the signal is the loss the training step computed anyway.

With ``K`` domains, exploration rate ``eps_t = min(1/K, sqrt(ln K / (K t)))`` (``eps_0 =
1/K``), importance-weighted and smoothed reward estimates ``R_i`` (``R_i = 0`` at first):

    R_i  <- alpha R_i + (1 - alpha) L_i / pi_i        (only domains seen in the interval)
    pi_i <- (1 - K eps_t) exp(eps_{t-1} R_i) / sum_j exp(eps_{t-1} R_j) + eps_t

``L_i`` is the mean training loss of domain ``i`` and ``pi_i`` the weight it was sampled with.
The paper updates after every batch, each drawn from a single domain; streammix batches mix
domains, so the policy updates every ``interval`` optimizer steps with each domain's mean loss
over that interval. Because the smoothed estimate's fixed point is ``L_i / pi_i`` whatever
the update frequency, this keeps the paper's behaviour. ``t`` is the 1-based index of the
first step the new weights apply to, and ``eps_{t-1}`` is the rate of the previous decision.
The first interval uses the initial weights (uniform unless given).

Note: the authors' code (``SmoothedMeanWeightUpdater``) differs from the paper's Algorithm 1:
it smooths ``exp(L_i)`` without importance weighting and, for mixed minibatches, normalizes
linearly instead of with a softmax. streammix follows the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

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
DEFAULT_SMOOTHING = 0.9


def exploration_rate(num_domains: int, t: int) -> float:
    """``eps_t = min(1/K, sqrt(ln K / (K t)))`` for ``t >= 1``."""
    return min(1.0 / num_domains, math.sqrt(math.log(num_domains) / (num_domains * t)))


def exp3_probabilities(rewards: np.ndarray, eps_prev: float, eps: float) -> np.ndarray:
    """``(1 - K eps) softmax(eps_prev * rewards) + eps``."""
    exponent = eps_prev * rewards
    soft = np.exp(exponent - exponent.max())
    soft /= soft.sum()
    probabilities = (1.0 - rewards.size * eps) * soft + eps
    return probabilities / probabilities.sum()


def smoothed_rewards(
    rewards: np.ndarray,
    losses: np.ndarray,
    counts: np.ndarray | None,
    weights: np.ndarray,
    smoothing: float,
) -> np.ndarray:
    """Update ``R_i`` for the domains with samples (finite loss, count > 0, weight > 0)."""
    seen = np.isfinite(losses) & (weights > 0)
    if counts is not None:
        seen &= counts > 0
    updated = rewards.copy()
    safe_weights = np.where(seen, weights, 1.0)
    estimate = smoothing * rewards + (1.0 - smoothing) * np.where(seen, losses, 0.0) / safe_weights
    updated[seen] = estimate[seen]
    return updated


@dataclass(frozen=True, kw_only=True)
class OdmPolicy:
    """Exp3 over domains with the training loss as reward; re-decides every ``interval`` steps."""

    name: ClassVar[str] = "odm"
    interval: int = DEFAULT_INTERVAL
    smoothing: float = DEFAULT_SMOOTHING

    def __post_init__(self) -> None:
        check_positive_int(self.interval, "interval")
        check_real(self.smoothing, "smoothing", 0.0, 1.0)

    @property
    def needs_validation(self) -> bool:
        return False

    def _params(self) -> dict:
        return {"interval": self.interval, "smoothing": float(self.smoothing)}

    def init(self, num_domains: int, initial_weights: np.ndarray | None = None) -> dict:
        num_domains = check_num_domains(num_domains)
        return {
            "num_domains": num_domains,
            "params": self._params(),
            "next_step": 0,
            "rewards": np.zeros(num_domains),
            "eps": 1.0 / num_domains,
            "weights": initial_or_uniform(initial_weights, num_domains),
        }

    def start(self, state: dict) -> tuple[Decision, dict]:
        decision = Decision(
            weights=state["weights"],
            num_steps=self.interval,
            evaluate=False,
            phase="exp3",
            info={"epsilon": state["eps"]},
        )
        return decision, {**state, "next_step": self.interval}

    def update(self, state: dict, observation: Observation) -> tuple[Decision, dict]:
        check_observation_step(state, observation)
        m = state["num_domains"]
        losses = observed_vector(observation, "train_loss", m)
        counts = observation.train_count
        if counts is not None and counts.size != m:
            raise ValueError(f"Observation.train_count has {counts.size} entries, not {m}")
        rewards = smoothed_rewards(
            state["rewards"], losses, counts, state["weights"], self.smoothing
        )
        eps = exploration_rate(m, observation.step + 1)
        weights = exp3_probabilities(rewards, state["eps"], eps)
        info = {"epsilon": eps, **{f"reward_{i}": r for i, r in enumerate(rewards.tolist())}}
        decision = Decision(
            weights=weights, num_steps=self.interval, evaluate=False, phase="exp3", info=info
        )
        state = {
            **state,
            "rewards": rewards,
            "eps": eps,
            "weights": weights,
            "next_step": observation.step + self.interval,
        }
        return decision, state

    def state_dict(self, state: dict) -> dict:
        return policy_state_dict(self.name, state)

    def load_state_dict(self, obj: dict) -> dict:
        state = restore_state(self.name, obj, ("rewards", "weights"))
        check_same_params(state["params"], self._params(), self.name)
        return state
