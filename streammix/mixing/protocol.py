"""The protocol between an online mixing policy and the training loop that drives it.

A policy is a stateless object holding only its configuration; everything that changes
during training lives in a ``state`` dict that the caller keeps and passes back::

    state = policy.init(num_domains, initial_weights)
    decision, state = policy.start(state)              # before step 0
    while training:
        train decision.num_steps steps on decision.weights
        (measure per-domain validation loss if decision.evaluate)
        decision, state = policy.update(state, Observation(...))

A :class:`Decision` with ``num_steps == 0`` (only together with ``evaluate=True``) means
"measure validation loss now, then call update again"; Aioli uses it for the baseline loss
before its first probes. ``state_dict``/``load_state_dict`` convert the state to JSON-able
plain Python values and back; resuming from ``load_state_dict(state_dict(s))`` gives
bit-identical decisions because float64 values survive the trip exactly.

The helpers here validate weights and observations with clear errors, and convert state
dicts; the policies themselves live in their own modules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

WEIGHT_SUM_TOLERANCE = 1e-9


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What the training loop measured since the last decision.

    ``train_loss``/``val_loss``: per-domain mean losses (NaN where a domain had no sample);
    ``train_count``: samples per domain; ``excess_loss`` (optional, for DoReMi): per-domain
    mean over tokens of ``max(token loss - reference model's token loss, 0)``.
    """

    step: int
    train_loss: np.ndarray | None = None
    train_count: np.ndarray | None = None
    val_loss: np.ndarray | None = None
    excess_loss: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.step, bool) or not isinstance(self.step, (int, np.integer)):
            raise TypeError(f"Observation.step must be an int, got {type(self.step).__name__}")
        if self.step < 0:
            raise ValueError(f"Observation.step must be >= 0, got {self.step}")
        object.__setattr__(self, "step", int(self.step))
        for name in ("train_loss", "train_count", "val_loss", "excess_loss"):
            value = getattr(self, name)
            if value is not None:
                array = np.array(value, dtype=np.float64)
                if array.ndim != 1:
                    raise ValueError(f"Observation.{name} must be 1-D, got shape {array.shape}")
                array.flags.writeable = False
                object.__setattr__(self, name, array)
        if self.train_count is not None and np.any(~(self.train_count >= 0)):
            raise ValueError(f"Observation.train_count must be >= 0, got {self.train_count}")
        if self.excess_loss is not None and np.any(self.excess_loss < 0):
            raise ValueError(f"Observation.excess_loss must be >= 0, got {self.excess_loss}")


@dataclass(frozen=True, kw_only=True)
class Decision:
    """Domain weights for the next ``num_steps`` optimizer steps, and what to measure."""

    weights: np.ndarray
    num_steps: int
    evaluate: bool
    phase: str
    info: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        weights = check_weights(self.weights, what="Decision.weights", normalize=False)
        if abs(float(weights.sum()) - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"Decision.weights must sum to 1, got sum {weights.sum()!r}")
        weights.flags.writeable = False
        object.__setattr__(self, "weights", weights)
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, (int, np.integer)):
            raise TypeError(f"Decision.num_steps must be an int, got {self.num_steps!r}")
        if self.num_steps < 0:
            raise ValueError(f"Decision.num_steps must be >= 0, got {self.num_steps}")
        if self.num_steps == 0 and not self.evaluate:
            raise ValueError("Decision.num_steps == 0 is only allowed together with evaluate=True")
        object.__setattr__(self, "num_steps", int(self.num_steps))
        object.__setattr__(self, "evaluate", bool(self.evaluate))
        object.__setattr__(self, "info", {str(k): float(v) for k, v in self.info.items()})


@runtime_checkable
class MixingPolicy(Protocol):
    """What the Composer callback calls; see the module docstring for the loop."""

    name: str

    @property
    def needs_validation(self) -> bool: ...

    def init(self, num_domains: int, initial_weights: np.ndarray | None = None) -> dict: ...

    def start(self, state: dict) -> tuple[Decision, dict]: ...

    def update(self, state: dict, observation: Observation) -> tuple[Decision, dict]: ...

    def state_dict(self, state: dict) -> dict: ...

    def load_state_dict(self, obj: dict) -> dict: ...


# ----------------------------------------------------------------------------- validation


def check_num_domains(num_domains: Any, minimum: int = 1) -> int:
    if isinstance(num_domains, bool) or not isinstance(num_domains, (int, np.integer)):
        raise TypeError(f"num_domains must be an int, got {type(num_domains).__name__}")
    if num_domains < minimum:
        raise ValueError(f"num_domains must be >= {minimum}, got {num_domains}")
    return int(num_domains)


def check_weights(
    weights: Any, *, num_domains: int | None = None, what: str = "weights", normalize: bool = True
) -> np.ndarray:
    """A float64 copy of ``weights``: 1-D, finite, >= 0, positive sum; normalized if asked."""
    try:
        array = np.array(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a sequence of numbers, got {weights!r}") from exc
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence, got shape {array.shape}")
    if num_domains is not None and array.size != num_domains:
        raise ValueError(f"{what} has {array.size} entries but there are {num_domains} domains")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be finite, got {array.tolist()}")
    if np.any(array < 0):
        raise ValueError(f"{what} must be >= 0, got {array.tolist()}")
    total = float(array.sum())
    if total <= 0:
        raise ValueError(f"{what} must have a positive sum, got {array.tolist()}")
    return array / total if normalize else array


def initial_or_uniform(initial_weights: Any, num_domains: int) -> np.ndarray:
    if initial_weights is None:
        return np.full(num_domains, 1.0 / num_domains)
    return check_weights(initial_weights, num_domains=num_domains, what="initial_weights")


def check_observation_step(state: dict, observation: Observation) -> None:
    """The callback must call update exactly after the decided number of steps."""
    if not isinstance(observation, Observation):
        raise TypeError(f"update expects an Observation, got {type(observation).__name__}")
    expected = state["next_step"]
    if observation.step != expected:
        raise ValueError(
            f"observation at step {observation.step}, but the last decision ends at step "
            f"{expected} (update must be called exactly after Decision.num_steps steps)"
        )


def observed_vector(observation: Observation, name: str, num_domains: int) -> np.ndarray:
    """``observation.<name>`` checked for presence and length (may contain NaN)."""
    value = getattr(observation, name)
    if value is None:
        raise ValueError(f"this policy needs Observation.{name}, but it is None")
    if value.size != num_domains:
        raise ValueError(
            f"Observation.{name} has {value.size} entries but there are {num_domains} domains"
        )
    return value


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(value: Any, name: str, low: float, high: float) -> float:
    """A finite float in the closed interval ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value}")
    return value


def weights_in_effect(
    published: list, initial: np.ndarray, first: int, stop: int
) -> np.ndarray:
    """Mean over batches ``[first, stop)`` of the weights each batch was drawn with.

    ``published`` holds ``[start_batch, weights]`` pairs in publication order (a decision's
    weights apply from its start batch, e.g. decision step + lag in lagged mode); a batch uses
    the last entry whose start is ``<= batch``, or ``initial`` before any.
    """
    if stop <= first:
        raise ValueError(f"empty batch range [{first}, {stop})")
    segments = [(0, initial)] + [(int(s), np.asarray(w, dtype=np.float64)) for s, w in published]
    total = np.zeros(len(initial))
    for k, (start, weights) in enumerate(segments):
        end = segments[k + 1][0] if k + 1 < len(segments) else stop
        low, high = max(start, first), min(end, stop)
        if high > low:
            total += (high - low) * weights
    return total / (stop - first)


# ----------------------------------------------------------------------------- state dicts


def to_plain(value: Any) -> Any:
    """Recursively turn numpy arrays and scalars into JSON-able Python values (exactly)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def policy_state_dict(name: str, state: dict) -> dict:
    return {"policy": name, "version": 1, **to_plain(state)}


def restore_state(name: str, obj: dict, array_keys: Iterable[str]) -> dict:
    """Inverse of :func:`policy_state_dict`; ``array_keys`` become float64 arrays (None stays)."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"state dict must be a mapping, got {type(obj).__name__}")
    if obj.get("policy") != name:
        raise ValueError(f"state dict belongs to policy {obj.get('policy')!r}, not {name!r}")
    if obj.get("version") != 1:
        raise ValueError(f"unsupported state dict version {obj.get('version')!r}")
    state = {k: v for k, v in obj.items() if k not in ("policy", "version")}
    for key in array_keys:
        if state.get(key) is not None:
            state[key] = np.array(state[key], dtype=np.float64)
    return state


def check_same_params(saved: Mapping, expected: Mapping, name: str) -> None:
    if to_plain(saved) != to_plain(expected):
        raise ValueError(
            f"state dict of policy {name!r} was made with options {dict(saved)}, but this "
            f"policy resolves to {dict(expected)}; resume with the same options"
        )


def round_state(num_domains: int, params: dict, weights: np.ndarray, **fields: Any) -> dict:
    """The fresh state of a policy that decides in rounds, before ``start``: ``phase`` is
    ``"start"``, ``round`` and ``next_step`` are 0; ``fields`` add the policy's own keys."""
    return {"num_domains": num_domains, "params": params, "next_step": 0, "phase": "start",
            "round": 0, "weights": weights, **fields}


def check_phase(state: dict, expected: str, call: str) -> None:
    if state["phase"] != expected:
        raise ValueError(f"{call} called on a state in phase {state['phase']!r}")


class ResolvedStateDict:
    """``state_dict``/``load_state_dict`` for a policy whose state keeps
    ``params = self.resolve(num_domains)``: the arrays named in ``state_arrays`` come back as
    float64 arrays, and a checkpoint made with other options is refused."""

    name: ClassVar[str]
    state_arrays: ClassVar[tuple[str, ...]]

    def resolve(self, num_domains: int) -> dict:
        raise NotImplementedError

    def state_dict(self, state: dict) -> dict:
        return policy_state_dict(self.name, state)

    def load_state_dict(self, obj: dict) -> dict:
        state = restore_state(self.name, obj, self.state_arrays)
        check_same_params(state["params"], self.resolve(state["num_domains"]), self.name)
        return state
