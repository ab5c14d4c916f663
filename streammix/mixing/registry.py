"""Policies by name: ``make_policy("aioli", eta=0.2)`` builds a configured policy.

Names: ``static``, ``scheduled``, ``aioli``, ``odm``, ``doremi``, ``opmix``. Options are the
fields of each policy's frozen dataclass; an unknown name is a ``ValueError`` that lists the
known names, an unknown option a ``TypeError`` that lists the accepted ones, and a bad option
value the ``ValueError``/``TypeError`` raised by the policy's own checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from streammix.mixing.aioli import AioliPolicy
from streammix.mixing.doremi import DoremiPolicy
from streammix.mixing.odm import OdmPolicy
from streammix.mixing.opmix import OpMixPolicy
from streammix.mixing.protocol import MixingPolicy
from streammix.mixing.static import ScheduledPolicy, StaticPolicy

POLICIES: dict[str, type] = {
    "static": StaticPolicy,
    "scheduled": ScheduledPolicy,
    "aioli": AioliPolicy,
    "odm": OdmPolicy,
    "doremi": DoremiPolicy,
    "opmix": OpMixPolicy,
}


def policy_options(name: str) -> list[str]:
    """The option names ``make_policy(name, ...)`` accepts."""
    return [f.name for f in dataclasses.fields(_policy_class(name))]


def _policy_class(name: str) -> type:
    if name not in POLICIES:
        raise ValueError(f"unknown mixing policy {name!r}; known policies: {sorted(POLICIES)}")
    return POLICIES[name]


def make_policy(name: str, **options: Any) -> MixingPolicy:
    """A configured policy; see each policy's module for its options and defaults."""
    cls = _policy_class(name)
    accepted = policy_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for policy {name!r}; accepted: {accepted}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [option for option in required if option not in options]
    if missing:
        raise ValueError(f"policy {name!r} needs option(s) {missing}")
    return cls(**options)
