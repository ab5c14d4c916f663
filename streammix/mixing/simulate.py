"""Drive a policy without a model: the callback's loop against a function that returns losses.

Used by the tests, the benchmark and anyone who wants to see what a policy does on a toy
problem before spending GPU time. ``run_policy`` plays the Composer callback's part: it calls
``start``, then ``update`` after each decision's ``num_steps`` steps with whatever the
``environment(decision, step)`` function observes. ``toy_losses`` is such an environment:
losses that are a pure function of the step and the weights (so a resumed simulation sees
exactly the observations the uninterrupted one saw). ``fixed_losses`` (constant losses,
sample counts drawn with the weights in effect, optionally lagged) and ``power_law_losses``
(each domain's loss falls with the samples it received, a reference model's final losses
included) remember what they were shown, so they serve one uninterrupted simulation each.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streammix.mixing.protocol import Decision, MixingPolicy, Observation, weights_in_effect

Environment = Callable[[Decision, int], Observation]


def toy_losses(num_domains: int, batch_size: int = 8) -> Environment:
    """Per-domain losses ``2 + cos(0.013 s + d) + 0.3 w_d + 0.01 d`` and realized counts."""

    def observe(decision: Decision, step: int) -> Observation:
        d = np.arange(num_domains)
        val = 2.0 + np.cos(0.013 * step + d) + 0.3 * decision.weights + 0.01 * d
        counts = np.floor(decision.weights * batch_size * decision.num_steps + 0.5)
        train = np.where(counts > 0, val + 0.05 * np.sin(step + d), np.nan)
        return Observation(
            step=step,
            train_loss=train,
            train_count=counts,
            val_loss=val if decision.evaluate else None,
        )

    return observe


def fixed_losses(
    losses: np.ndarray,
    *,
    batch_size: int = 8,
    lag: int = 0,
    initial_weights: np.ndarray | None = None,
) -> Environment:
    """Constant per-domain losses; counts are the expected samples under the applied weights.

    A decision made after step ``s`` applies from batch ``s + lag`` (``initial_weights``,
    uniform by default, before the first one), as the dataset does in lagged mode; the counts
    of an interval are ``batch_size`` times the sum of the weights its batches were drawn with
    (fractional, so an importance-weighted estimate is exact).
    """
    losses = np.asarray(losses, dtype=np.float64)
    m = losses.size
    initial = np.full(m, 1.0 / m) if initial_weights is None else np.asarray(initial_weights)
    published: list = []

    def observe(decision: Decision, step: int) -> Observation:
        first = step - decision.num_steps
        published.append([first + lag, decision.weights.tolist()])
        drawn = weights_in_effect(published, initial, first, step)
        while len(published) > 1 and published[1][0] <= step:  # no later batch uses [0]
            published.pop(0)
        counts = drawn * batch_size * decision.num_steps
        return Observation(
            step=step,
            train_loss=np.where(counts > 0, losses, np.nan),
            train_count=counts,
            val_loss=losses if decision.evaluate else None,
        )

    return observe


def power_law_loss(floor: np.ndarray, scale: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """``floor + scale / (1 + samples / 1000) ** 0.5``: loss after ``samples`` of a domain."""
    return floor + scale / np.sqrt(1.0 + samples / 1000.0)


def power_law_losses(floor: np.ndarray, scale: np.ndarray, *, batch_size: int = 8) -> Environment:
    """Each domain's loss falls with the samples trained on it (:func:`power_law_loss`).

    Counts are whole samples: domain ``i`` gets ``floor(c_i(end)) - floor(c_i(start))`` of an
    interval, ``c_i`` its cumulative target ``sum weights_i * batch_size`` (what the
    deterministic interleave delivers, within one sample). A sample counts for the decision's
    ``info["loss_weight_i"]`` when present (DoReMi's reweighting form), else 1. The reported
    loss is the domain's loss at the end of the interval (NaN without samples); the validation
    loss is the same, for every domain.
    """
    floor = np.asarray(floor, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    m = floor.size
    target = np.zeros(m)
    trained = np.zeros(m)

    def observe(decision: Decision, step: int) -> Observation:
        before = np.floor(target)
        target[:] += decision.weights * batch_size * decision.num_steps
        counts = np.floor(target + 1e-9) - before
        multiplier = np.array([decision.info.get(f"loss_weight_{i}", 1.0) for i in range(m)])
        trained[:] += counts * multiplier
        loss = power_law_loss(floor, scale, trained)
        return Observation(
            step=step,
            train_loss=np.where(counts > 0, loss, np.nan),
            train_count=counts,
            val_loss=loss if decision.evaluate else None,
        )

    return observe


def run_policy(
    policy: MixingPolicy,
    num_domains: int,
    environment: Environment,
    num_updates: int,
    *,
    initial_weights: np.ndarray | None = None,
    resume: tuple[dict, Decision] | None = None,
) -> tuple[list[Decision], dict]:
    """``start()`` then ``num_updates`` updates; ``resume=(state, last decision)`` continues.

    Returns the decisions made (including the start decision unless resuming) and the state.
    """
    if resume is None:
        state = policy.init(num_domains, initial_weights)
        decision, state = policy.start(state)
        decisions = [decision]
    else:
        state, decision = resume
        decisions = []
    step = state["next_step"] - decision.num_steps
    for _ in range(num_updates):
        step += decision.num_steps
        decision, state = policy.update(state, environment(decision, step))
        decisions.append(decision)
    return decisions, state


def decisions_identical(a: list[Decision], b: list[Decision]) -> bool:
    """Bit-for-bit equality of two decision sequences (NaN info values compare equal)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not np.array_equal(x.weights, y.weights):
            return False
        if (x.num_steps, x.evaluate, x.phase) != (y.num_steps, y.evaluate, y.phase):
            return False
        if x.info.keys() != y.info.keys():
            return False
        if not all(np.array_equal(x.info[k], y.info[k], equal_nan=True) for k in x.info):
            return False
    return True
