"""ODM: Online Data Mixing as an Exp3 bandit over domains (Albalak et al. 2023).

Reference: A. Albalak, L. Pan, C. Raffel, W. Y. Wang, "Efficient Online Data Mixing For
Language Model Pre-Training", arXiv:2312.02406, Algorithm 1, and the authors' code
(github.com/alon-albalak/online-data-mixing, ``megatron/data/data_sampling_utils.py``,
``SmoothedMeanWeightUpdater``, which their README names as the paper's implementation).
Each domain is an arm; its reward is the training loss of the samples drawn from it (a high
loss means the model still has much to learn there). No extra forward passes.

The paper, with ``K`` domains, step ``t`` and smoothing ``alpha``:

    (1) eps_t = min(1/K, sqrt(ln K / (K t)))                  exploration rate, eps_0 = 1/K
    (2) pi_t(i) = (1 - K eps_t) exp(eps_{t-1} R_i) / sum_j exp(eps_{t-1} R_j) + eps_t
    (3) R_i <- alpha R_i + (1 - alpha) L / pi(i)             for the domain the batch came from

**Why a literal reading drifts to uniform.** Exp3 proper uses the *cumulative* estimate
``S_i = sum_s rhat_i(s)``, which grows like ``t``, so the exponent ``eps_{t-1} S_i`` grows like
``sqrt(t)`` and the weights concentrate on the best arm. (3) replaces the sum by a moving
average, which stays of the order of ``L / pi`` (a few units for LM losses), while
``eps_{t-1} -> 0``: the exponent in (2) goes to 0 and ``pi`` to uniform, whatever the losses.
With losses 2/6/3 that gave [0.330, 0.338, 0.332] after 100k steps. The authors' code does not
do that for mixed minibatches (``group_update``, the path used when a batch holds samples of
several domains, as every streammix batch does): it normalizes the smoothed rewards linearly,
``pi_i = (1 - K eps_t) eps_{t-1} R_i / sum_j eps_{t-1} R_j + eps_t``, where ``eps_{t-1}``
cancels. The learned preference then survives while the exploration floor ``eps_t`` decays,
and with constant losses the weights converge to ``R_i / sum_j R_j``, i.e. toward the
high-loss domain. streammix follows that rule.

**What streammix computes** every ``interval`` steps (each decision spans ``interval``
optimizer steps of mixed batches), with ``n_i`` samples of domain ``i`` among the ``N`` of the
interval, ``L_i`` their mean loss and ``pibar_i`` the mean of the weights that the interval's
batches were actually drawn with:

    g_i    = L_i                          (reward="loss", the paper)
           = exp(L_i)                     (reward="exp_loss", the authors' code's reward scale)
    rhat_i = g_i n_i / (N pibar_i)        importance-weighted reward, 0 when n_i = 0
    R_i   <- alpha R_i + (1 - alpha) rhat_i                       (every domain, R_i = 0 at first)
    pi_i   = (1 - K eps_t) R_i / sum_j R_j + eps_t                (uniform share while sum R = 0)

``rhat_i`` is (3)'s ``L / pi(i)`` applied to each of the interval's ``N`` draws (a draw from
domain ``i`` scores ``L / pi_i``, a draw from another domain scores 0 for ``i``) and averaged:
an unbiased estimate of ``g_i`` whatever ``pi`` was, so a rarely drawn domain is neither
starved nor over-rewarded. (The authors' code smooths ``exp(L_i)`` of the domains present
in a batch without importance weights; streammix keeps the paper's importance weighting,
which scores a domain without samples 0 for that interval instead of skipping it, so that
the estimate's mean is ``g_i`` however rarely the domain is drawn.) ``t`` is the 1-based index of the first step the new weights apply
to. The first interval uses the initial weights (uniform unless given).

**Lagged weights.** With ``MixingConfig(weight_updates="lagged", lag_batches=L)`` a decision
made after step ``s`` applies from batch ``s + L``, so the batches observed in an interval
were drawn with older weights. Give the policy the same ``lag=L``: it keeps its recently
published decisions (start batch, weights) in its state and averages the weights in effect
over the observed batches for ``pibar``; with ``lag=0`` (exact mode) ``pibar`` is simply the
last decision's weights.
"""

from __future__ import annotations

import math
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
    weights_in_effect,
)

DEFAULT_INTERVAL = 10
DEFAULT_SMOOTHING = 0.9
MAX_EXP_LOSS = 700.0  # exp(700) ~ 1e304: the largest loss whose exponential is finite


def exploration_rate(num_domains: int, t: int) -> float:
    """``eps_t = min(1/K, sqrt(ln K / (K t)))`` for ``t >= 1``."""
    return min(1.0 / num_domains, math.sqrt(math.log(num_domains) / (num_domains * t)))


def exp3_probabilities(rewards: np.ndarray, eps: float) -> np.ndarray:
    """``(1 - K eps) R / sum(R) + eps``; the share is uniform while every ``R_i`` is 0."""
    total = float(rewards.sum())
    share = rewards / total if total > 0 else np.full(rewards.size, 1.0 / rewards.size)
    probabilities = (1.0 - rewards.size * eps) * share + eps
    return probabilities / probabilities.sum()


def importance_weighted_rewards(
    gains: np.ndarray, counts: np.ndarray, drawn_with: np.ndarray
) -> np.ndarray:
    """``rhat_i = g_i n_i / (N pibar_i)``, 0 for domains without samples (or all 0 if N = 0)."""
    total = float(counts.sum())
    seen = counts > 0
    if total <= 0:
        return np.zeros(gains.size)
    if np.any(seen & (drawn_with <= 0)):
        bad = np.flatnonzero(seen & (drawn_with <= 0)).tolist()
        raise ValueError(
            f"domains {bad} have samples but were drawn with weight 0; in lagged mode give "
            "ODM the dataset's lag_batches as lag="
        )
    safe = np.where(seen, drawn_with, 1.0)
    return np.where(seen, gains * counts / (total * safe), 0.0)


def _prune(schedule: list, next_first: int) -> list:
    """Drop published entries that no batch from ``next_first`` on can use any more."""
    keep_from = 0
    for k in range(1, len(schedule)):
        if schedule[k][0] <= next_first:
            keep_from = k
    return schedule[keep_from:]


@dataclass(frozen=True, kw_only=True)
class OdmPolicy:
    """Exp3 over domains with the training loss as reward; re-decides every ``interval`` steps.

    Options: ``interval`` (steps per decision), ``smoothing`` (the moving-average ``alpha``;
    0.9 in the paper), ``reward`` (``"loss"`` or ``"exp_loss"``), ``lag`` (the dataset's
    ``lag_batches`` in lagged mode, 0 in exact mode).
    """

    name: ClassVar[str] = "odm"
    interval: int = DEFAULT_INTERVAL
    smoothing: float = DEFAULT_SMOOTHING
    reward: Literal["loss", "exp_loss"] = "loss"
    lag: int = 0

    def __post_init__(self) -> None:
        check_positive_int(self.interval, "interval")
        check_real(self.smoothing, "smoothing", 0.0, 1.0)
        if self.reward not in ("loss", "exp_loss"):
            raise ValueError(f"reward must be 'loss' or 'exp_loss', got {self.reward!r}")
        check_positive_int(self.lag, "lag", minimum=0)

    @property
    def needs_validation(self) -> bool:
        return False

    def _params(self) -> dict:
        return {
            "interval": self.interval,
            "smoothing": float(self.smoothing),
            "reward": self.reward,
            "lag": self.lag,
        }

    def init(self, num_domains: int, initial_weights: np.ndarray | None = None) -> dict:
        num_domains = check_num_domains(num_domains)
        initial = initial_or_uniform(initial_weights, num_domains)
        return {
            "num_domains": num_domains,
            "params": self._params(),
            "next_step": 0,
            "rewards": np.zeros(num_domains),
            "eps": 1.0 / num_domains,
            "weights": initial,
            "initial": initial.copy(),
            "schedule": [],
        }

    def _decide(self, state: dict, step: int, info: dict[str, float]) -> tuple[Decision, dict]:
        decision = Decision(
            weights=state["weights"], num_steps=self.interval, evaluate=False, phase="exp3",
            info=info,
        )
        schedule = state["schedule"] + [[step + self.lag, state["weights"].tolist()]]
        state = {
            **state,
            "schedule": _prune(schedule, step),
            "next_step": step + self.interval,
        }
        return decision, state

    def start(self, state: dict) -> tuple[Decision, dict]:
        return self._decide(state, 0, {"epsilon": state["eps"]})

    def _gains(self, losses: np.ndarray, seen: np.ndarray) -> np.ndarray:
        values = np.where(seen, losses, 0.0)
        if np.any(values < 0):
            raise ValueError(f"ODM's reward is a loss and must be >= 0, got {losses.tolist()}")
        if self.reward == "loss":
            return values
        if np.any(values > MAX_EXP_LOSS):
            raise ValueError(
                f"reward='exp_loss' needs losses <= {MAX_EXP_LOSS}, got {losses.tolist()}"
            )
        return np.where(seen, np.exp(values), 0.0)

    def update(self, state: dict, observation: Observation) -> tuple[Decision, dict]:
        check_observation_step(state, observation)
        m = state["num_domains"]
        losses = observed_vector(observation, "train_loss", m)
        if observation.train_count is None:
            raise ValueError(
                "ODM needs Observation.train_count (samples per domain) for its importance "
                "weights"
            )
        counts = observed_vector(observation, "train_count", m)
        seen = np.isfinite(losses) & (counts > 0)
        counts = np.where(seen, counts, 0.0)
        step = observation.step
        drawn_with = weights_in_effect(
            state["schedule"], state["initial"], step - self.interval, step
        )
        estimate = importance_weighted_rewards(self._gains(losses, seen), counts, drawn_with)
        rewards = self.smoothing * state["rewards"] + (1.0 - self.smoothing) * estimate
        eps = exploration_rate(m, step + 1)
        weights = exp3_probabilities(rewards, eps)
        info = {
            "epsilon": eps,
            **{f"reward_{i}": r for i, r in enumerate(rewards.tolist())},
            **{f"drawn_weight_{i}": w for i, w in enumerate(drawn_with.tolist())},
        }
        state = {**state, "rewards": rewards, "eps": eps, "weights": weights}
        return self._decide(state, step, info)

    def state_dict(self, state: dict) -> dict:
        return policy_state_dict(self.name, state)

    def load_state_dict(self, obj: dict) -> dict:
        state = restore_state(self.name, obj, ("rewards", "weights", "initial"))
        check_same_params(state["params"], self._params(), self.name)
        state["schedule"] = [[int(s), [float(x) for x in w]] for s, w in state["schedule"]]
        return state
