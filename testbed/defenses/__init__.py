"""The paper's defenses as switches (a scenario's ``defenses`` key), enforced by the orchestrator.

- **tool pinning**: a hash of each tool's description and schemas at its first listing; a call to a tool
  listed differently later is refused;
- **role binding**: each tool has a privilege level (annotations, or the scenario's ``privileges``), the agent a
  role (its highest level); a call above it is refused;
- **scoped memory**: a handle is bound to the run and agent it was issued to and expires after a TTL; handles
  are collected when their run ends;
- **provenance tags**: every value a call returns is tagged with that call; a data argument (image, path,
  handle, mask) without a tag from this run is refused.

Runtime contracts, the fifth defense, are the scenario's own ``contracts`` key (``policy: halt``).
"""

from testbed.defenses._config import DEFENSE_NAMES, Defense, Defenses, PrivilegeLevel
from testbed.defenses._guard import HANDLE_ROLES, PROVENANCE_ROLES, DefenseGuard
from testbed.defenses._pinning import ToolPins, tool_fingerprint
from testbed.defenses._privilege import annotated_level, role_level, tool_levels

__all__ = [
    "DEFENSE_NAMES",
    "HANDLE_ROLES",
    "PROVENANCE_ROLES",
    "Defense",
    "DefenseGuard",
    "Defenses",
    "PrivilegeLevel",
    "ToolPins",
    "annotated_level",
    "role_level",
    "tool_fingerprint",
    "tool_levels",
]
