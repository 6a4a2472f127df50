"""Servers of the paper's five case studies (``case-*``), registered as plug-ins like the reference servers.

Each reproduces the mechanism one case study of the audit describes, not its numbers: how often a
composition meets the mechanism is the case family's configuration (``scenarios/cases/``), and what the
validators catch is measured from the recorded runs (``testbed reproduce cases``).

``case-alita``
    Tools generated at start-up from tool specs, outputs sent without type enforcement.
``case-fhir-study``
    An imaging study source that declares the acquisition's pixel spacing on the image it serves.
``case-blender`` / ``case-paraview`` / ``case-paraview-memo``
    Stateful scene composition with datablocks that outlive their bindings; renders whose binary
    texture travels base64 inside nested JSON, re-rendered every call or memoised.
"""

import importlib

MODULES = ("alita", "fhir", "blender", "paraview")
"""Every case server's module; importing one registers it."""

for _module in MODULES:
    importlib.import_module(f"servers.cases.{_module}")

__all__ = ["MODULES"]
