"""Online domain-mixing policies: pure numpy, one small protocol (no torch, streaming or composer).

``make_policy(name, **options)`` builds a policy; ``protocol`` documents the loop the
Composer callback runs (``init`` -> ``start`` -> ``update`` ...).
"""

from streammix.mixing.aioli import AioliPolicy
from streammix.mixing.doremi import DoremiPolicy
from streammix.mixing.odm import OdmPolicy
from streammix.mixing.opmix import OpMixPolicy, ProbeObservation
from streammix.mixing.protocol import Decision, MixingPolicy, Observation
from streammix.mixing.registry import POLICIES, make_policy, policy_options
from streammix.mixing.static import ScheduledPolicy, StaticPolicy

__all__ = [
    "POLICIES",
    "AioliPolicy",
    "Decision",
    "DoremiPolicy",
    "MixingPolicy",
    "Observation",
    "OdmPolicy",
    "OpMixPolicy",
    "ProbeObservation",
    "ScheduledPolicy",
    "StaticPolicy",
    "make_policy",
    "policy_options",
]
