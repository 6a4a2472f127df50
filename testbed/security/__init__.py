"""Security probes' core: the eight threat vectors, canaries outside a sandbox, and the containment guard.

The deliberately vulnerable servers themselves live in ``servers.vulnerable`` (the core never imports them).
"""

from testbed.security._canary import CanarySet, place_canaries
from testbed.security._guard import Breach, Containment, ContainmentBreachError, contained
from testbed.security._vectors import Vector

__all__ = ["Breach", "CanarySet", "Containment", "ContainmentBreachError", "Vector", "contained", "place_canaries"]
