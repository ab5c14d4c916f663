"""DoReMi: domain reweighting with minimax optimization against a reference model.

Reference: S. M. Xie, H. Pham, X. Dong, N. Du, H. Liu, Y. Lu, P. Liang, Q. V. Le, T. Ma,
A. W. Yu, "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining",
NeurIPS 2023 (arXiv:2305.10429), Algorithm 1; reference code github.com/sangmichaelxie/doremi
(``doremi/trainer.py``, ``update_domain_weights``).

DoReMi trains a small proxy model with Group DRO against a reference model trained on the
reference mixture. With ``m`` domains, step size ``eta`` (1 in the paper), smoothing ``c``
(1e-3) and the proxy's and the reference's per-token losses ``l_theta``, ``l_ref``, at each
update ``t`` (Algorithm 1):

    (1) lambda_t[i] = (1 / sum_{x in B_i} |x|) sum_{x in B_i} sum_j max(l_theta,j(x) - l_ref,j(x), 0)
                                                      per-domain mean of the per-token excess loss
    (2) alpha'_t = alpha_{t-1} * exp(eta lambda_t)    exponentiated-gradient ascent
    (3) alpha_t  = (1 - c) alpha'_t / sum_i alpha'_t[i] + c / m          renormalize and smooth
    (4) the proxy's loss is sum_i alpha_t[i] * (mean per-token loss of domain i in the batch)
    (5) the output is the average alpha_bar = (1/T) sum_{t=1..T} alpha_t

**The excess (1) in streammix.** The observation carries per-domain means. If it carries
``Observation.excess_loss`` (the per-domain mean of the per-token clipped excess, for a
training loop that runs the reference model on the batch) that is (1) exactly. Otherwise the
reference is one loss per domain ``L_ref[i]`` and ``lambda[i] = max(L[i] - L_ref[i], 0)`` with
``L[i]`` the domain's mean training loss (or validation loss with ``signal="val"``): the clip
applied to the mean rather than to each token, which is never larger than (1).

**Reference losses.** Either given (``reference_loss=[...]``: the per-domain losses of a model
trained on the initial mixture, e.g. averaged from the last decisions of a static run's
``history.jsonl`` with :func:`reference_from_history`), or measured by streammix at the start
of the run (``reference_steps=N``): the first ``N`` steps train on the initial weights and the
per-domain losses of the last ``interval`` of them become ``L_ref``. The in-run reference is a
cheap stand-in: the paper's reference model is trained as long as the proxy, so its losses keep
falling with it; a reference frozen early makes the excess shrink to 0 as training proceeds.

**Two forms** (``form=``):

* ``"resample"`` (default): ``alpha_t`` is the sampling mixture (online DoReMi).
* ``"reweight"``: the paper's proxy training. Sampling stays at the initial (reference)
  mixture ``p``; ``alpha_t`` weights the losses as in (4). Each decision's
  ``info["loss_weight_i"]`` (also :meth:`DoremiPolicy.loss_weights`) is the per-sample
  multiplier ``alpha_t[i] / p[i]``: the training loop multiplies each sample's loss by the
  multiplier of its domain before averaging over the batch, so the expected loss of a batch
  drawn from ``p`` is ``sum_i alpha_t[i] L_i``, i.e. (4) (dividing by the sum of the batch's
  multipliers instead, as the reference code does, gives the same up to batch noise).

Either way (5) is in ``info["avg_weight_i"]`` and :meth:`DoremiPolicy.average_weights`: the
weights to train the main model on, as the paper does.

**Starved domains.** In the resampling form a domain whose weight is small can have no sample
in an interval, so there is no observation of its loss. Treating that as excess 0 (as
streammix once did) shrinks it again and again: with eta 1 and interval 10 one domain reached
0.98 in 200 steps and the others sat at the smoothing floor for good. streammix does what the
reference code does: a domain without samples keeps its last observed excess (an absence of
data is not evidence of a small excess), and a domain never observed yet gets the largest
excess of the update (the reference code starts every domain at ``ln(vocabulary size)``, an
upper bound). The smoothing floor ``c / m`` and the deterministic interleave (every domain gets
its share of samples within one sample) make a starved domain observed again, and when its
excess is the largest it recovers. ``signal="val"`` observes every domain at every update.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
    """``max(L - L_ref, 0)`` per domain; NaN where the loss is NaN (domain not observed)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(losses), np.maximum(losses - reference, 0.0), np.nan)


def fill_unobserved(observed: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Observed excess where finite, else the carried last one, else the update's maximum."""
    excess = np.where(np.isfinite(observed), observed, carried)
    known = excess[np.isfinite(excess)]
    return np.where(np.isfinite(excess), excess, known.max() if known.size else 0.0)


def doremi_step(
    weights: np.ndarray, excess: np.ndarray, eta: float, smoothing: float
) -> np.ndarray:
    """Equations (2) and (3): exponentiated-gradient step, renormalization, smoothing."""
    with np.errstate(divide="ignore"):
        logits = np.log(weights) + eta * excess
    soft = np.exp(logits - logits.max())
    soft /= soft.sum()
    smoothed = (1.0 - smoothing) * soft + smoothing / weights.size
    return smoothed / smoothed.sum()


def reference_from_history(
    history: Mapping[str, Any], *, signal: Literal["train", "val"] = "train", last: int = 5
) -> list[float]:
    """Per-domain reference losses from a finished run's ``history.jsonl`` (read with ``streammix.composer.history.read_history``).

    The mean of the last ``last`` recorded losses of each domain (``train_loss`` or
    ``val_loss``, skipping missing values), e.g. from a static run on the initial weights.
    """
    key = "val_loss" if signal == "val" else "train_loss"
    records = [r[key] for r in history.get("history", []) if r.get(key) is not None]
    if not records:
        raise ValueError(f"the history has no {key} records to take reference losses from")
    columns = np.array([[np.nan if v is None else v for v in r] for r in records[-last:]])
    means = []
    for d in range(columns.shape[1]):
        values = columns[:, d][np.isfinite(columns[:, d])]
        if values.size == 0:
            raise ValueError(f"domain {d} has no {key} in the last {last} history records")
        means.append(float(values.mean()))
    return means


@dataclass(frozen=True, kw_only=True)
class DoremiPolicy:
    """DoReMi's excess-loss reweighting (see the module docstring for the equations)."""

    name: ClassVar[str] = "doremi"
    reference_loss: tuple[float, ...] | None = None
    reference_steps: int = 0
    eta: float = 1.0
    smoothing: float = DEFAULT_SMOOTHING
    interval: int = DEFAULT_INTERVAL
    signal: Literal["train", "val"] = "train"
    form: Literal["resample", "reweight"] = "resample"

    def __post_init__(self) -> None:
        if self.reference_loss is not None:
            if not isinstance(self.reference_loss, (Sequence, np.ndarray)) or isinstance(
                self.reference_loss, str
            ):
                raise TypeError(
                    f"reference_loss must be a sequence of numbers, got {self.reference_loss!r}"
                )
            reference = tuple(
                check_real(x, "reference_loss entry", -np.inf, np.inf)
                for x in self.reference_loss
            )
            if not reference:
                raise ValueError("reference_loss must not be empty")
            object.__setattr__(self, "reference_loss", reference)
        check_positive_int(self.reference_steps, "reference_steps", minimum=0)
        check_real(self.eta, "eta", 0.0, np.inf)
        check_real(self.smoothing, "smoothing", 0.0, 1.0)
        check_positive_int(self.interval, "interval")
        if self.signal not in ("train", "val"):
            raise ValueError(f"signal must be 'train' or 'val', got {self.signal!r}")
        if self.form not in ("resample", "reweight"):
            raise ValueError(f"form must be 'resample' or 'reweight', got {self.form!r}")
        if (self.reference_loss is None) == (self.reference_steps == 0):
            raise ValueError(
                "doremi needs exactly one source of reference losses: reference_loss=[...] "
                "(given) or reference_steps=N (measured on the initial weights)"
            )
        if self.reference_steps and self.reference_steps < self.interval:
            raise ValueError(
                f"reference_steps ({self.reference_steps}) must be >= interval ({self.interval})"
            )

    @property
    def needs_validation(self) -> bool:
        return self.signal == "val"

    def _params(self) -> dict:
        return {
            "reference_loss": None if self.reference_loss is None else list(self.reference_loss),
            "reference_steps": self.reference_steps,
            "eta": float(self.eta),
            "smoothing": float(self.smoothing),
            "interval": self.interval,
            "signal": self.signal,
            "form": self.form,
        }

    # ------------------------------------------------------------------ state

    def init(self, num_domains: int, initial_weights: np.ndarray | None = None) -> dict:
        num_domains = check_num_domains(num_domains)
        if self.reference_loss is not None and len(self.reference_loss) != num_domains:
            raise ValueError(
                f"reference_loss has {len(self.reference_loss)} entries but there are "
                f"{num_domains} domains"
            )
        initial = initial_or_uniform(initial_weights, num_domains)
        if self.form == "reweight" and np.any(initial <= 0):
            raise ValueError(
                "form='reweight' samples from the initial mixture and weights the losses, so "
                f"every domain needs an initial weight > 0, got {initial.tolist()}"
            )
        return {
            "num_domains": num_domains,
            "params": self._params(),
            "next_step": 0,
            "phase": "doremi" if self.reference_loss is not None else "reference-warmup",
            "reference": None if self.reference_loss is None else np.array(self.reference_loss),
            "initial": initial,
            "weights": initial.copy(),
            "excess": np.full(num_domains, np.nan),
            "weight_sum": np.zeros(num_domains),
            "num_updates": 0,
        }

    def state_dict(self, state: dict) -> dict:
        obj = policy_state_dict(self.name, state)
        obj["excess"] = [x if math.isfinite(x) else None for x in obj["excess"]]  # JSON: no NaN
        return obj

    def load_state_dict(self, obj: dict) -> dict:
        keys = ("reference", "initial", "weights", "excess", "weight_sum")
        state = restore_state(self.name, obj, keys)
        state["excess"] = np.array(
            [np.nan if x is None else x for x in obj["excess"]], dtype=np.float64
        )
        check_same_params(state["params"], self._params(), self.name)
        return state

    # ------------------------------------------------------------------ outputs

    def average_weights(self, state: dict) -> np.ndarray:
        """Equation (5): the mean of ``alpha_t`` over the updates so far (initial before any)."""
        if state["num_updates"] == 0:
            return state["initial"].copy()
        return state["weight_sum"] / state["num_updates"]

    def loss_weights(self, state: dict) -> np.ndarray:
        """Per-sample loss multipliers ``alpha_t[i] / p[i]`` of the reweighting form.

        In the resampling form sampling already follows ``alpha_t`` and every multiplier is 1.
        """
        if self.form == "resample":
            return np.ones(state["num_domains"])
        return state["weights"] / state["initial"]

    # ------------------------------------------------------------------ protocol

    def _decide(self, state: dict, info: dict[str, float]) -> tuple[Decision, dict]:
        phase = state["phase"]
        if phase == "reference-warmup":
            num_steps, evaluate = self.reference_steps - self.interval, False
            if num_steps == 0:
                phase = "reference"
        if phase == "reference":
            num_steps, evaluate = self.interval, self.needs_validation
        if phase == "doremi":
            num_steps, evaluate = self.interval, self.needs_validation
            info = {
                **info,
                **{f"avg_weight_{i}": w for i, w in enumerate(self.average_weights(state))},
            }
            if self.form == "reweight":
                multipliers = self.loss_weights(state).tolist()
                info.update({f"loss_weight_{i}": w for i, w in enumerate(multipliers)})
        sampling = state["weights"] if self.form == "resample" else state["initial"]
        decision = Decision(
            weights=sampling, num_steps=num_steps, evaluate=evaluate, phase=phase, info=info
        )
        return decision, {**state, "phase": phase, "next_step": state["next_step"] + num_steps}

    def start(self, state: dict) -> tuple[Decision, dict]:
        return self._decide(state, {})

    def _losses(self, state: dict, observation: Observation) -> np.ndarray:
        m = state["num_domains"]
        if self.signal == "val":
            return observed_vector(observation, "val_loss", m)
        losses = observed_vector(observation, "train_loss", m)
        if observation.train_count is not None:
            counts = observed_vector(observation, "train_count", m)
            losses = np.where(counts > 0, losses, np.nan)
        return losses

    def update(self, state: dict, observation: Observation) -> tuple[Decision, dict]:
        check_observation_step(state, observation)
        phase = state["phase"]
        if phase == "reference-warmup":
            return self._decide({**state, "phase": "reference"}, {})
        losses = self._losses(state, observation)
        if phase == "reference":
            unseen = np.flatnonzero(~np.isfinite(losses)).tolist()
            if unseen:
                raise ValueError(
                    f"domains {unseen} had no samples in the last {self.interval} reference "
                    "steps; use a longer interval, signal='val' or give reference_loss"
                )
            state = {**state, "phase": "doremi", "reference": losses.copy()}
            info = {f"reference_{i}": x for i, x in enumerate(losses.tolist())}
            return self._decide(state, info)
        observed = self._observed_excess(state, observation, losses)
        excess = fill_unobserved(observed, state["excess"])
        weights = doremi_step(state["weights"], excess, float(self.eta), float(self.smoothing))
        state = {
            **state,
            "weights": weights,
            "excess": excess,
            "weight_sum": state["weight_sum"] + weights,
            "num_updates": state["num_updates"] + 1,
        }
        info = {f"excess_{i}": x for i, x in enumerate(excess.tolist())}
        info.update({f"observed_{i}": float(x) for i, x in enumerate(np.isfinite(observed))})
        return self._decide(state, info)

    def _observed_excess(
        self, state: dict, observation: Observation, losses: np.ndarray
    ) -> np.ndarray:
        if observation.excess_loss is None:
            return excess_loss(losses, state["reference"])
        given = observed_vector(observation, "excess_loss", state["num_domains"])
        # a domain counts as observed where the loss signal observed it
        return np.where(np.isfinite(losses), given, np.nan)
