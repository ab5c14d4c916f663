"""Static and scheduled domain weights: policies that never look at losses.

``static``: one weight vector for the whole run, ``p(s) = w`` (the ``weights`` option, or
the initial weights given to ``init``; uniform when both are absent). It re-issues the same
decision every ``interval`` steps so the callback has a regular point to log.

``scheduled``: weights as a function of the optimizer step ``s`` through points
``(s_0 = 0, w_0), (s_1, w_1), ...`` with strictly increasing steps (each ``w_k`` is
normalized to sum 1):

* ``mode="piecewise"``: ``p(s) = w_k`` for ``s_k <= s < s_{k+1}``; one decision per piece.
* ``mode="linear"``: ``p(s) = (1 - lam) w_k + lam w_{k+1}`` with
  ``lam = (s - s_k) / (s_{k+1} - s_k)``, ``p(s) = w_last`` after the last point. Weights
  are re-decided every ``interval`` steps and also at every point, and each decision holds
  the value at its first step ``s`` (left end).

Both are pure functions of the step, so their state is only the step bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from streammix.mixing.protocol import (
    Decision,
    Observation,
    check_num_domains,
    check_observation_step,
    check_positive_int,
    check_same_params,
    check_weights,
    initial_or_uniform,
    policy_state_dict,
    restore_state,
)

DEFAULT_STATIC_INTERVAL = 1000
DEFAULT_SCHEDULE_INTERVAL = 100


@dataclass(frozen=True, kw_only=True)
class StaticPolicy:
    """Fixed weights; ``weights=None`` uses the initial weights passed to ``init``."""

    name: ClassVar[str] = "static"
    weights: tuple[float, ...] | None = None
    interval: int = DEFAULT_STATIC_INTERVAL

    def __post_init__(self) -> None:
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(check_weights(self.weights).tolist()))
        check_positive_int(self.interval, "interval")

    @property
    def needs_validation(self) -> bool:
        return False

    def init(self, num_domains: int, initial_weights: np.ndarray | None = None) -> dict:
        num_domains = check_num_domains(num_domains)
        if self.weights is not None:
            weights = check_weights(self.weights, num_domains=num_domains, what="static weights")
        else:
            weights = initial_or_uniform(initial_weights, num_domains)
        return {"num_domains": num_domains, "next_step": 0, "weights": weights}

    def _decide(self, state: dict) -> tuple[Decision, dict]:
        decision = Decision(
            weights=state["weights"], num_steps=self.interval, evaluate=False, phase="static"
        )
        return decision, {**state, "next_step": state["next_step"] + self.interval}

    def start(self, state: dict) -> tuple[Decision, dict]:
        return self._decide(state)

    def update(self, state: dict, observation: Observation) -> tuple[Decision, dict]:
        check_observation_step(state, observation)
        return self._decide(state)

    def state_dict(self, state: dict) -> dict:
        return policy_state_dict(self.name, {**state, "params": {"interval": self.interval}})

    def load_state_dict(self, obj: dict) -> dict:
        state = restore_state(self.name, obj, ["weights"])
        check_same_params(state.pop("params"), {"interval": self.interval}, self.name)
        if self.weights is not None and state["weights"].tolist() != list(self.weights):
            raise ValueError("state dict weights differ from this static policy's weights")
        return state


def _normalize_points(points: Any) -> tuple[tuple[int, tuple[float, ...]], ...]:
    if isinstance(points, dict):
        points = sorted(points.items())
    if not isinstance(points, Sequence) or len(points) == 0:
        raise ValueError(f"points must be a non-empty sequence of (step, weights), got {points!r}")
    result = []
    for point in points:
        if not isinstance(point, Sequence) or len(point) != 2:
            raise ValueError(f"each schedule point must be (step, weights), got {point!r}")
        step = check_positive_int(point[0], "schedule step", minimum=0)
        weights = tuple(check_weights(point[1], what=f"weights at step {step}").tolist())
        result.append((step, weights))
    steps = [s for s, _ in result]
    if steps[0] != 0:
        raise ValueError(f"the first schedule point must be at step 0, got {steps[0]}")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"schedule steps must be strictly increasing, got {steps}")
    if len({len(w) for _, w in result}) != 1:
        raise ValueError("all schedule points must have the same number of weights")
    return tuple(result)


@dataclass(frozen=True, kw_only=True)
class ScheduledPolicy:
    """Weights as a piecewise-constant or piecewise-linear function of the step."""

    name: ClassVar[str] = "scheduled"
    points: tuple[tuple[int, tuple[float, ...]], ...]
    mode: Literal["piecewise", "linear"] = "piecewise"
    interval: int = DEFAULT_SCHEDULE_INTERVAL

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", _normalize_points(self.points))
        if self.mode not in ("piecewise", "linear"):
            raise ValueError(f"mode must be 'piecewise' or 'linear', got {self.mode!r}")
        check_positive_int(self.interval, "interval")

    @property
    def needs_validation(self) -> bool:
        return False

    def weights_at(self, step: int) -> np.ndarray:
        """The scheduled weights at optimizer step ``step`` (the oracle the decisions use)."""
        steps = [s for s, _ in self.points]
        k = int(np.searchsorted(steps, step, side="right")) - 1
        current = np.array(self.points[k][1])
        if self.mode == "piecewise" or k == len(steps) - 1:
            return current
        lam = (step - steps[k]) / (steps[k + 1] - steps[k])
        mixed = (1.0 - lam) * current + lam * np.array(self.points[k + 1][1])
        return mixed / mixed.sum()

    def _length_at(self, step: int) -> int:
        later = [s for s, _ in self.points if s > step]
        if not later:
            return self.interval
        if self.mode == "piecewise":
            return later[0] - step
        return min(self.interval, later[0] - step)

    def init(self, num_domains: int, initial_weights: np.ndarray | None = None) -> dict:
        num_domains = check_num_domains(num_domains)
        if len(self.points[0][1]) != num_domains:
            raise ValueError(
                f"schedule weights have {len(self.points[0][1])} entries but there are "
                f"{num_domains} domains"
            )
        return {"num_domains": num_domains, "next_step": 0}

    def _decide(self, state: dict, step: int) -> tuple[Decision, dict]:
        num_steps = self._length_at(step)
        decision = Decision(
            weights=self.weights_at(step),
            num_steps=num_steps,
            evaluate=False,
            phase=f"scheduled:{self.mode}",
        )
        return decision, {**state, "next_step": step + num_steps}

    def start(self, state: dict) -> tuple[Decision, dict]:
        return self._decide(state, 0)

    def update(self, state: dict, observation: Observation) -> tuple[Decision, dict]:
        check_observation_step(state, observation)
        return self._decide(state, observation.step)

    def _params(self) -> dict:
        return {"points": self.points, "mode": self.mode, "interval": self.interval}

    def state_dict(self, state: dict) -> dict:
        return policy_state_dict(self.name, {**state, "params": self._params()})

    def load_state_dict(self, obj: dict) -> dict:
        state = restore_state(self.name, obj, [])
        check_same_params(state.pop("params"), self._params(), self.name)
        return state
