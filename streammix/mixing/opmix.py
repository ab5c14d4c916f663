"""OP-Mix: mixtures chosen by interpolating LoRA probes of the model being trained.

Reference: M. Y. Hu, A. Gandhi, K. Cho, T. Linzen, P. Sharma, "Always Learning, Always Mixing:
Efficient and Simple Data Mixing All The Time", arXiv:2605.15220, and its code
(michahu/on-policy-mix). The mathematics (proxy design, law fit, proposer, their equations)
is in :mod:`streammix.mixing.mixing_law`; this module is the policy that sequences it.

The loop (``m`` training domains, prior ``q`` = the initial weights):

1. ``start``: train ``probe_at`` steps on ``q`` (phase ``prior``).
2. At the decision point ``update`` returns a zero-step Decision with ``evaluate=True`` and
   phase ``probe``: "probe now". :meth:`OpMixPolicy.proxy_mixtures` gives the design: the
   ``m`` vertices plus ``num_random`` seeded ``Dirichlet(alpha)`` draws.
3. The caller (``streammix.composer.opmix.OpMixProbing``) snapshots the model, trains one
   LoRA adapter per domain, builds proxy ``p`` as the model plus ``sum_j x_pj dW_j``,
   measures each proxy's per-domain held-out loss and calls ``update`` again, at the same
   step, with a :class:`ProbeObservation` (``proxy_mixtures`` ``(P, m)``, ``proxy_losses``
   ``(P, n)``; any mixtures on the simplex are accepted, proxies with a non-finite loss are
   dropped).
4. ``update`` fits ``y_i(x) = exp(c_i) + exp(t_i . x)`` per evaluation domain (Huber,
   multi-start L-BFGS), solves ``x* = argmin sum_i w_i exp(t_i . x) + kl_reg KL(x || q)``
   (``w = target_weights``, the held-out mix the run is for; ``1/n`` each by default, the
   reference's equal weights)
   and trains on ``x*`` (phase ``opmix``) for ``probe_every`` steps (then probes again) or,
   by default, for the rest of the run (``total_steps - step``, or a very long hold when
   ``total_steps`` is unknown). Should the proposer not converge (seen only for slopes of
   ~40, i.e. a broken fit) the prior is kept and ``info["propose_failed"] = 1``.
   ``prior="current"`` regularizes toward the weights in use
   instead of the initial ones (for repeated decisions in continual training).

Options ``probe_at`` and ``total_steps`` depend on the run's length; the callback fills them
in from Composer's ``max_duration`` (``probe_at`` = 20% of it by default). ``OnlineMixing``
cannot drive this policy: it has no probes to offer, and ``update`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from streammix.mixing.mixing_law import (
    check_mixtures,
    check_target,
    fit_laws,
    kkt_residual,
    propose,
    proxy_design,
    target_mean,
)
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
    round_state,
)

HOLD_STEPS = 1 << 40  # "the rest of the run" when its length is unknown


@dataclass(frozen=True, kw_only=True)
class ProbeObservation(Observation):
    """What the probing callback measured: proxy ``p`` = model + ``sum_j mixtures[p, j] dW_j``.

    ``proxy_losses[p, i]`` is proxy ``p``'s mean held-out loss on evaluation domain ``i``;
    ``base_loss`` (optional, for logging) the snapshot's own per-domain held-out loss.
    """

    proxy_mixtures: np.ndarray
    proxy_losses: np.ndarray
    base_loss: np.ndarray | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        mixtures = check_mixtures(self.proxy_mixtures, what="ProbeObservation.proxy_mixtures")
        losses = np.array(self.proxy_losses, dtype=np.float64)
        if losses.ndim != 2 or losses.shape[0] != mixtures.shape[0] or losses.shape[1] < 1:
            raise ValueError(
                f"ProbeObservation.proxy_losses must have shape ({mixtures.shape[0]}, n >= 1) "
                f"(one row per proxy mixture), got {losses.shape}"
            )
        for name, array in (("proxy_mixtures", mixtures), ("proxy_losses", losses)):
            array.flags.writeable = False
            object.__setattr__(self, name, array)
        if self.base_loss is not None:
            base = np.array(self.base_loss, dtype=np.float64)
            if base.shape != (losses.shape[1],):
                raise ValueError(f"ProbeObservation.base_loss must have shape "
                                 f"({losses.shape[1]},), got {base.shape}")
            base.flags.writeable = False
            object.__setattr__(self, "base_loss", base)


@dataclass(frozen=True, kw_only=True)
class OpMixPolicy(ResolvedStateDict):
    """OP-Mix (see the module docstring); reference defaults ``kl_reg=0.05, huber_delta=0.02``."""

    name: ClassVar[str] = "opmix"
    state_arrays: ClassVar[tuple[str, ...]] = ("prior", "weights", "proxies", "log_c", "slopes",
                                               "huber")
    needs_probes: ClassVar[bool] = True
    probe_at: int | None = None
    probe_every: int | None = None
    total_steps: int | None = None
    num_random: int | None = None
    dirichlet_alpha: float = 1.0
    kl_reg: float = 0.05
    huber_delta: float = 0.02
    fit_starts: int = 64
    fit_max_iter: int = 500
    prior: Literal["initial", "current"] = "initial"
    target_weights: tuple[float, ...] | None = None  # one per evaluation domain
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target_weights is not None:
            object.__setattr__(self, "target_weights", tuple(check_weights(
                self.target_weights, what="target_weights").tolist()))
        for name in ("probe_at", "probe_every", "total_steps"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        if self.num_random is not None:
            check_positive_int(self.num_random, "num_random", minimum=0)
        check_real(self.dirichlet_alpha, "dirichlet_alpha", 1e-6, 1e6)
        if isinstance(self.kl_reg, bool) or not isinstance(self.kl_reg, (int, float)):
            raise TypeError(f"kl_reg must be a number, got {self.kl_reg!r}")
        if not self.kl_reg > 0:  # also refuses NaN; inf keeps the prior
            raise ValueError(f"kl_reg must be > 0 (inf keeps the prior), got {self.kl_reg}")
        check_real(self.huber_delta, "huber_delta", 1e-12, math.inf)
        check_positive_int(self.fit_starts, "fit_starts")
        check_positive_int(self.fit_max_iter, "fit_max_iter")
        if self.prior not in ("initial", "current"):
            raise ValueError(f"prior must be 'initial' or 'current', got {self.prior!r}")
        check_positive_int(self.seed, "seed", minimum=0)

    @property
    def needs_validation(self) -> bool:
        return True

    def resolve(self, num_domains: int) -> dict:
        """The effective options for ``num_domains`` (``num_random`` defaults to ``2 m``;
        ``target_weights`` only when set, so checkpoints from before it still load)."""
        params = {
            "probe_at": self.probe_at,
            "probe_every": self.probe_every,
            "total_steps": self.total_steps,
            "num_random": 2 * num_domains if self.num_random is None else self.num_random,
            "dirichlet_alpha": float(self.dirichlet_alpha),
            "kl_reg": float(self.kl_reg),
            "huber_delta": float(self.huber_delta),
            "fit_starts": self.fit_starts,
            "fit_max_iter": self.fit_max_iter,
            "prior": self.prior,
            "seed": self.seed,
        }
        if self.target_weights is not None:
            params["target_weights"] = list(self.target_weights)
        return params

    def init(self, num_domains: int, initial_weights: np.ndarray | None = None) -> dict:
        num_domains = check_num_domains(num_domains, minimum=2)
        initial = initial_or_uniform(initial_weights, num_domains)
        return round_state(num_domains, self.resolve(num_domains), initial, prior=initial,
                           proxies=None, log_c=None, slopes=None, huber=None)

    def start(self, state: dict) -> tuple[Decision, dict]:
        check_phase(state, "start", "start()")
        probe_at = state["params"]["probe_at"]
        if probe_at is None:
            raise ValueError(
                "OpMixPolicy.probe_at is not set: the OP-Mix callback sets it from the run's "
                "length (probe_fraction); set it yourself when driving the policy directly"
            )
        decision = Decision(weights=state["weights"], num_steps=probe_at, evaluate=False,
                            phase="prior")
        return decision, {**state, "phase": "prior", "next_step": probe_at}

    def proxy_mixtures(self, state: dict) -> np.ndarray:
        """The proxies to build at the current decision point, ``(P, m)``."""
        if state["phase"] != "probe":
            raise ValueError(f"no probe is due: the state is in phase {state['phase']!r}")
        return state["proxies"].copy()

    def update(self, state: dict, observation: Observation) -> tuple[Decision, dict]:
        check_observation_step(state, observation)
        if state["phase"] in ("prior", "train"):
            params, m = state["params"], state["num_domains"]
            proxies = proxy_design(m, params["num_random"], alpha=params["dirichlet_alpha"],
                                   seed=params["seed"], round_index=state["round"])
            decision = Decision(weights=state["weights"], num_steps=0, evaluate=True,
                                phase="probe", info={"round": state["round"],
                                                     "num_proxies": proxies.shape[0]})
            return decision, {**state, "phase": "probe", "proxies": proxies}
        if state["phase"] != "probe":
            raise ValueError(f"update() called on a state in phase {state['phase']!r}")
        if not isinstance(observation, ProbeObservation):
            raise TypeError(
                "OP-Mix is at a decision point and needs a ProbeObservation (the held-out losses "
                "of LoRA-interpolated proxies); drive it with streammix.composer.opmix.OpMixProbing, "
                "not OnlineMixing"
            )
        return self._decide(state, observation)

    def _decide(self, state: dict, observation: ProbeObservation) -> tuple[Decision, dict]:
        params, m = state["params"], state["num_domains"]
        mixtures, losses = observation.proxy_mixtures, observation.proxy_losses
        if mixtures.shape[1] != m:
            raise ValueError(f"ProbeObservation.proxy_mixtures has {mixtures.shape[1]} columns "
                             f"but there are {m} domains")
        keep = np.all(np.isfinite(losses), axis=1)
        if keep.sum() < 2:
            raise ValueError(f"OP-Mix needs at least 2 proxies with finite losses, got "
                             f"{int(keep.sum())} of {keep.size}")
        fit = fit_laws(mixtures[keep], losses[keep], num_starts=params["fit_starts"],
                       delta=params["huber_delta"], max_iter=params["fit_max_iter"],
                       seed=params["seed"] + state["round"])
        prior = state["prior"] if params["prior"] == "initial" else state["weights"]
        target = params.get("target_weights")
        if target is not None and len(target) != losses.shape[1]:
            raise ValueError(f"target_weights has {len(target)} entries but the probes were "
                             f"evaluated on {losses.shape[1]} held-out domains")
        try:
            weights = propose(fit.slopes, prior, params["kl_reg"], target=target)
            failed = 0.0
        except RuntimeError:  # only met with absurd slopes (|t| ~ 40): keep the prior
            weights, failed = prior / prior.sum(), 1.0
        step = observation.step
        if params["probe_every"] is not None:
            hold = params["probe_every"]
        elif params["total_steps"] is not None and params["total_steps"] > step:
            hold = params["total_steps"] - step
        else:
            hold = HOLD_STEPS
        info = {"round": state["round"], "proxies_used": int(keep.sum()),
                "propose_failed": failed,
                "proxies_dropped": int((~keep).sum()),
                "kkt_residual": kkt_residual(weights, fit.slopes, prior, params["kl_reg"],
                                             target=target)
                if math.isfinite(params["kl_reg"]) else 0.0,
                "predicted_loss": target_mean(fit.predict(weights)[0], check_target(
                    target, losses.shape[1]))}
        for i in range(fit.slopes.shape[0]):
            info[f"huber_{i}"] = float(fit.huber[i])
            info[f"log_c_{i}"] = float(fit.log_c[i])
        decision = Decision(weights=weights, num_steps=hold, evaluate=False, phase="opmix",
                            info=info)
        state = {**state, "phase": "train", "round": state["round"] + 1, "weights": weights,
                 "proxies": None, "log_c": fit.log_c, "slopes": fit.slopes, "huber": fit.huber,
                 "next_step": step + hold}
        return decision, state
