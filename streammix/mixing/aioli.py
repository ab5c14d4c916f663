"""Aioli: online mixing from a learned interaction matrix (Chen et al. 2024).

Reference: M. F. Chen, M. Y. Hu, N. Lourie, K. Cho, C. Ré, "Aioli: A Unified Optimization
Framework for Language Model Data Mixing", arXiv:2411.05735, and its trainer
(HazyResearch/aioli, ``trainer/aioli_trainer.py``), whose order of operations this follows.

Training is a sequence of rounds of ``U = update_steps`` optimizer steps over ``m`` domains.
Each round starts with LearnParams, using ``h = one_hot_factor``:

1. ``prev`` = per-domain validation loss at the start of the round.
2. For ``r`` in ``lp_rounds`` passes, each over a seeded random permutation of the domains,
   for each domain ``j``: train ``lp_steps`` steps on ``q_j = h e_j + (1-h)/(m-1) (1 - e_j)``,
   measure validation loss ``L``, set ``G[:, j] += prev - L`` and ``prev = L``.
3. ``G /= lp_rounds``.
4. If ``h != 1``: solve ``W A[i, :]^T = G[i, :]^T`` for every row ``i``, where row ``j`` of
   ``W`` is the mixture probe ``j`` trained on (the realized mixture averaged over the
   ``lp_rounds`` probes of ``j`` when the callback reports per-domain sample counts, else the
   requested ``q_j``). With ``h == 1`` ``A = G``.
5. Normalize (``normalize_a``): if ``min A < 0`` then ``A -= min A``; then ``A /= sum A``.
6. Update (``update_rule``):
   ``"ema"``: ``Abar = A`` in the first round, else ``Abar = (1 - ema) A + ema Abar``, and
   ``w = w0 * exp(eta * Abar.sum(0))``;
   ``"multiplicative"``: ``w = w_prev * exp(eta * A.sum(0))`` with ``w_prev = w0`` at first.
   With ``target_weights`` ``t`` (the held-out mix the run is for, normalized to sum 1) the
   column sums become ``m * (t @ A)``: row ``i`` of ``A`` is how much each domain lowers
   evaluation domain ``i``'s loss, so the update follows the target's loss instead of the
   equal-weight sum the reference minimizes (``t = 1/m`` gives the sum back; Skill-It, the
   same authors' earlier method, weighs evaluation skills this way).
7. ``p = w / sum(w)``; train the remaining ``U - lp_rounds * lp_steps * m`` steps on ``p``.

``w0`` is uniform (the reference always restarts from ones); ``anchor="initial"`` uses the
initial weights instead. ``prior_steps > 0`` trains on the initial weights first (the
reference's ``aioli_prior``/``prior_steps``). Every loss measurement is a Decision with
``evaluate=True``; the baseline of the very first round is a zero-step Decision, and the
training part of a round evaluates at its end, which is the next round's baseline (the
reference measures that same model state at the start of the next round).

Defaults (from the reference's scripts; ``lp_rounds, lp_steps, eta, ema, h, U``):
2 domains ``4, 4, 0.2, 0.1, 0.625, 250``; 3 domains ``4, 6, 0.1, 0.5, 0.5, 250``;
7 domains ``2, 10, 1, 0.1, 0.75, 200``. Our choice for other counts: 4 to 6 domains use
the 3-domain values; 8 or more use the 7-domain values with ``U = ceil(200 m / 7)`` so
LearnParams keeps the same 70% share of a round.

Deviations from the reference, all documented choices:
* permutations come from ``streammix.core.rng`` (keyed by seed and round), not numpy's
  global RNG;
* realized probe mixtures (from ``train_count``) replace the requested ``q_j`` in ``W``;
  if that ``W`` is singular or badly conditioned the requested ``q_j`` are used instead
  (``info["solve_fallback"] = 1``);
* if normalization meets an all-zero ``A`` (no loss changed) it leaves ``A = 0`` where the
  reference would divide by zero;
* weights are computed in a max-shifted (overflow-free) form and stored normalized, which
  equals the reference's ``w / sum(w)`` up to floating-point rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from streammix.core.rng import derive_key, permute_index_reference
from streammix.mixing.protocol import (
    Decision,
    Observation,
    ResolvedStateDict,
    check_num_domains,
    check_observation_step,
    check_phase,
    check_positive_int,
    check_real,
    check_weights,
    initial_or_uniform,
    observed_vector,
    round_state,
)

# Key-space tag for the LearnParams permutations ("AIOL"); unrelated to rng.PURPOSE_* values.
PURPOSE_AIOLI_ORDER = 0x41494F4C
MAX_CONDITION_NUMBER = 1e12

# num_domains -> (lp_rounds, lp_steps, eta, ema, one_hot_factor, update_steps)
REFERENCE_DEFAULTS = {
    2: (4, 4, 0.2, 0.1, 0.625, 250),
    3: (4, 6, 0.1, 0.5, 0.5, 250),
    7: (2, 10, 1.0, 0.1, 0.75, 200),
}


def default_options(num_domains: int) -> tuple[int, int, float, float, float, int]:
    """The reference defaults for ``num_domains`` (our extrapolation for other counts)."""
    if num_domains in REFERENCE_DEFAULTS:
        return REFERENCE_DEFAULTS[num_domains]
    if num_domains < 7:
        return REFERENCE_DEFAULTS[3]
    lp_rounds, lp_steps, eta, ema, h, _ = REFERENCE_DEFAULTS[7]
    return lp_rounds, lp_steps, eta, ema, h, math.ceil(200 * num_domains / 7)


def probe_mixture(domain: int, num_domains: int, one_hot_factor: float) -> np.ndarray:
    """``q_j = h e_j + (1 - h)/(m - 1) (1 - e_j)``."""
    q = np.full(num_domains, (1.0 - one_hot_factor) / (num_domains - 1))
    q[domain] = one_hot_factor
    return q


def probe_order(seed: int, round_index: int, num_domains: int, lp_rounds: int) -> list[int]:
    """The domains probed in round ``round_index``: ``lp_rounds`` seeded permutations."""
    order = []
    for lp_round in range(lp_rounds):
        key = derive_key(seed, PURPOSE_AIOLI_ORDER, round_index, lp_round)
        order.extend(permute_index_reference(i, num_domains, key) for i in range(num_domains))
    return order


def solve_interactions(gain: np.ndarray, mixtures: np.ndarray) -> np.ndarray:
    """``A`` with ``mixtures @ A[i] = gain[i]`` for every row ``i`` (row j of mixtures = probe j)."""
    return np.linalg.solve(mixtures, gain.T).T


def normalize_interactions(a: np.ndarray) -> np.ndarray:
    """Shift so the minimum entry is >= 0, then divide by the total (zero stays zero)."""
    a = a.copy()
    min_entry = a.min()
    if min_entry < 0:
        a -= min_entry
    total = a.sum()
    return a / total if total > 0 else a


def column_scores(a: np.ndarray, target: list[float] | None) -> np.ndarray:
    """``A.sum(0)``, or ``m * (t @ A)`` for target weights ``t`` over the evaluated rows."""
    if target is None:
        return a.sum(axis=0)
    return a.shape[0] * (np.asarray(target, dtype=np.float64) @ a)


def exponentiated_weights(base: np.ndarray, scores: np.ndarray, eta: float) -> np.ndarray:
    """``base * exp(eta * scores)`` normalized, computed without overflow."""
    exponent = eta * scores
    w = base * np.exp(exponent - exponent.max())
    return w / w.sum()


@dataclass(frozen=True, kw_only=True)
class AioliPolicy(ResolvedStateDict):
    """Aioli; options left ``None`` take the reference defaults for the number of domains."""

    name: ClassVar[str] = "aioli"
    state_arrays: ClassVar[tuple[str, ...]] = ("prev_loss", "gain", "probe_mix", "ema_a",
                                               "last_a", "weights", "base")
    lp_rounds: int | None = None
    lp_steps: int | None = None
    eta: float | None = None
    ema: float | None = None
    one_hot_factor: float | None = None
    update_steps: int | None = None
    update_rule: Literal["ema", "multiplicative"] = "ema"
    normalize_a: bool = True
    use_realized_mixtures: bool = True
    anchor: Literal["uniform", "initial"] = "uniform"
    prior_steps: int = 0
    target_weights: tuple[float, ...] | None = None  # one per domain's held-out loss
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target_weights is not None:
            object.__setattr__(self, "target_weights", tuple(check_weights(
                self.target_weights, what="target_weights").tolist()))
        for name in ("lp_rounds", "lp_steps", "update_steps"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        if self.eta is not None:
            check_real(self.eta, "eta", 0.0, math.inf)
        if self.ema is not None:
            check_real(self.ema, "ema", 0.0, 1.0)
        if self.one_hot_factor is not None:
            check_real(self.one_hot_factor, "one_hot_factor", 0.0, 1.0)
        if self.update_rule not in ("ema", "multiplicative"):
            raise ValueError(
                f"update_rule must be 'ema' or 'multiplicative', got {self.update_rule!r}"
            )
        if self.anchor not in ("uniform", "initial"):
            raise ValueError(f"anchor must be 'uniform' or 'initial', got {self.anchor!r}")
        for name in ("normalize_a", "use_realized_mixtures"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        check_positive_int(self.prior_steps, "prior_steps", minimum=0)
        check_positive_int(self.seed, "seed", minimum=0)

    @property
    def needs_validation(self) -> bool:
        return True

    def resolve(self, num_domains: int) -> dict:
        """The effective options for ``num_domains``, checked against each other."""
        defaults = default_options(num_domains)
        names = ("lp_rounds", "lp_steps", "eta", "ema", "one_hot_factor", "update_steps")
        params = {
            name: default if getattr(self, name) is None else getattr(self, name)
            for name, default in zip(names, defaults)
        }
        params["eta"], params["ema"] = float(params["eta"]), float(params["ema"])
        params["one_hot_factor"] = float(params["one_hot_factor"])
        probe_steps = params["lp_rounds"] * params["lp_steps"] * num_domains
        if params["update_steps"] <= probe_steps:
            raise ValueError(
                f"update_steps ({params['update_steps']}) must exceed the LearnParams steps "
                f"lp_rounds * lp_steps * num_domains = {probe_steps}"
            )
        if abs(params["one_hot_factor"] - 1.0 / num_domains) < 1e-9:
            raise ValueError(
                f"one_hot_factor = 1/num_domains = {params['one_hot_factor']} makes every probe "
                "the uniform mixture, so the interactions cannot be solved for"
            )
        params.update(
            update_rule=self.update_rule,
            normalize_a=self.normalize_a,
            use_realized_mixtures=self.use_realized_mixtures,
            anchor=self.anchor,
            prior_steps=self.prior_steps,
            seed=self.seed,
        )
        if self.target_weights is not None:  # only when set: older checkpoints still load
            if len(self.target_weights) != num_domains:
                raise ValueError(f"target_weights has {len(self.target_weights)} entries but "
                                 f"there are {num_domains} domains")
            params["target_weights"] = list(self.target_weights)
        return params

    def init(self, num_domains: int, initial_weights: np.ndarray | None = None) -> dict:
        num_domains = check_num_domains(num_domains, minimum=2)
        params = self.resolve(num_domains)
        initial = initial_or_uniform(initial_weights, num_domains)
        base = initial if self.anchor == "initial" else np.full(num_domains, 1.0 / num_domains)
        return round_state(num_domains, params, initial, probe=0, order=None, prev_loss=None,
                           gain=np.zeros((num_domains, num_domains)),
                           probe_mix=np.zeros((num_domains, num_domains)),
                           ema_a=None, last_a=None, base=base)

    def start(self, state: dict) -> tuple[Decision, dict]:
        check_phase(state, "start", "start()")
        if self.prior_steps > 0:
            decision = Decision(
                weights=state["weights"], num_steps=self.prior_steps, evaluate=True, phase="prior"
            )
            return decision, {**state, "phase": "prior", "next_step": self.prior_steps}
        decision = Decision(weights=state["weights"], num_steps=0, evaluate=True, phase="baseline")
        return decision, {**state, "phase": "baseline"}

    def update(self, state: dict, observation: Observation) -> tuple[Decision, dict]:
        check_observation_step(state, observation)
        m = state["num_domains"]
        val_loss = observed_vector(observation, "val_loss", m)
        if not np.all(np.isfinite(val_loss)):
            raise ValueError(
                f"Aioli needs a finite validation loss for every domain, got {val_loss}"
            )
        if state["phase"] in ("prior", "baseline", "train"):
            params = state["params"]
            state = {
                **state,
                "order": probe_order(params["seed"], state["round"], m, params["lp_rounds"]),
                "prev_loss": val_loss.copy(),
                "probe": 0,
                "gain": np.zeros((m, m)),
                "probe_mix": np.zeros((m, m)),
            }
            return self._probe_decision(state)
        if state["phase"] != "probe":
            raise ValueError(f"update() called on a state in phase {state['phase']!r}")
        state = self._record_probe(state, observation, val_loss)
        if state["probe"] < state["params"]["lp_rounds"] * m:
            return self._probe_decision(state)
        return self._finish_learn_params(state)

    def _probe_decision(self, state: dict) -> tuple[Decision, dict]:
        params, m = state["params"], state["num_domains"]
        domain = state["order"][state["probe"]]
        decision = Decision(
            weights=probe_mixture(domain, m, params["one_hot_factor"]),
            num_steps=params["lp_steps"],
            evaluate=True,
            phase=f"probe:{domain}",
            info={"round": state["round"], "probe": state["probe"]},
        )
        next_step = state["next_step"] + params["lp_steps"]
        return decision, {**state, "phase": "probe", "next_step": next_step}

    def _record_probe(self, state: dict, observation: Observation, val_loss: np.ndarray) -> dict:
        params, m = state["params"], state["num_domains"]
        domain = state["order"][state["probe"]]
        gain = state["gain"].copy()
        gain[:, domain] += state["prev_loss"] - val_loss
        mixture = probe_mixture(domain, m, params["one_hot_factor"])
        counts = observation.train_count
        if params["use_realized_mixtures"] and counts is not None:
            if counts.size != m:
                raise ValueError(f"Observation.train_count has {counts.size} entries, not {m}")
            if counts.sum() > 0:
                mixture = counts / counts.sum()
        probe_mix = state["probe_mix"].copy()
        probe_mix[domain] += mixture
        return {
            **state,
            "gain": gain,
            "probe_mix": probe_mix,
            "prev_loss": val_loss.copy(),
            "probe": state["probe"] + 1,
        }

    def _interactions(self, state: dict) -> tuple[np.ndarray, dict[str, float]]:
        params, m = state["params"], state["num_domains"]
        gain = state["gain"] / params["lp_rounds"]
        info: dict[str, float] = {}
        h = params["one_hot_factor"]
        if h == 1.0:
            a = gain
        else:
            mixtures = state["probe_mix"] / params["lp_rounds"]
            if np.linalg.cond(mixtures) > MAX_CONDITION_NUMBER:
                mixtures = np.stack([probe_mixture(j, m, h) for j in range(m)])
                info["solve_fallback"] = 1.0
            a = solve_interactions(gain, mixtures)
        if params["normalize_a"]:
            a = normalize_interactions(a)
        return a, info

    def _finish_learn_params(self, state: dict) -> tuple[Decision, dict]:
        params, m = state["params"], state["num_domains"]
        a, info = self._interactions(state)
        first = state["round"] == 0
        ema_a = state["ema_a"]
        target = params.get("target_weights")
        if params["update_rule"] == "ema":
            ema_a = a if first else (1.0 - params["ema"]) * a + params["ema"] * ema_a
            weights = exponentiated_weights(state["base"], column_scores(ema_a, target),
                                            params["eta"])
        else:
            previous = state["base"] if first else state["weights"]
            weights = exponentiated_weights(previous, column_scores(a, target), params["eta"])
        info["round"] = state["round"]
        for j, column_sum in enumerate(a.sum(axis=0)):
            info[f"a_colsum_{j}"] = column_sum
        if ema_a is not None:
            for j, column_sum in enumerate(ema_a.sum(axis=0)):
                info[f"abar_colsum_{j}"] = column_sum
        train_steps = params["update_steps"] - params["lp_rounds"] * params["lp_steps"] * m
        decision = Decision(
            weights=weights, num_steps=train_steps, evaluate=True, phase="train", info=info
        )
        state = {
            **state,
            "phase": "train",
            "round": state["round"] + 1,
            "probe": 0,
            "ema_a": ema_a,
            "weights": weights,
            "last_a": a,
            "next_step": state["next_step"] + train_steps,
        }
        return decision, state
