"""The paper's defenses as switches (a scenario's ``defenses`` key), enforced by the orchestrator.

- **tool pinning**: a hash of each tool's description and schemas at its first listing; a call to a tool
  listed differently later is refused;
- **role binding**: each tool has a privilege level (annotations, or the scenario's ``privileges``), the agent a
  role (its highest level); a call above it is refused;
- **scoped memory**: a handle is bound to the run and agent it was issued to and expires after a TTL; handles
  are collected when their run ends;
- **provenance tags**: every value a call returns is tagged with that call, as data where the producer declares
  a data role (image, path, handle, mask, crop) and as text elsewhere (a message, a caption); a data argument
  must be the scene or data of this run, so text a tool returned, echoed into a path or handle, is refused.

Runtime contracts, the fifth defense, are the scenario's own ``contracts`` key (``policy: halt``): one
representation, switched in an experiment by a ``contracts`` factor, never by a switch here.
"""

from testbed.defenses._config import DEFENSE_NAMES, Defense, Defenses, PrivilegeLevel
from testbed.defenses._guard import DATA_ROLES, HANDLE_ROLES, PROVENANCE_ROLES, DefenseGuard
from testbed.defenses._pinning import ToolPins, tool_fingerprint
from testbed.defenses._privilege import annotated_level, role_level, tool_levels

__all__ = [
    "DATA_ROLES",
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
