"""Security probes' core: the eight threat vectors, attack specs, canaries outside a sandbox, and the containment guard.

The deliberately vulnerable servers themselves live in ``servers.vulnerable`` (the core never imports them).
"""

from testbed.security._attack import (
    AttackGoal,
    AttackSpec,
    CanaryGoal,
    ForeignReadGoal,
    InstructionGoal,
    ToolCalledGoal,
    without_attack,
)
from testbed.security._canary import CANARY_FILES, CanarySet, place_canaries
from testbed.security._guard import Breach, Containment, ContainmentBreachError, contained
from testbed.security._vectors import Vector

__all__ = [
    "CANARY_FILES",
    "AttackGoal",
    "AttackSpec",
    "Breach",
    "CanaryGoal",
    "CanarySet",
    "Containment",
    "ContainmentBreachError",
    "ForeignReadGoal",
    "InstructionGoal",
    "ToolCalledGoal",
    "Vector",
    "contained",
    "place_canaries",
    "without_attack",
]
