"""Reference and deliberately faulty vision MCP servers, registered as plug-ins of the testbed.

Each module is one real MCP server, registered with :func:`testbed.registry.server`
exactly as an outside distribution registers its own (this package is the
entry point ``servers`` of the group ``mcp_vision_testbed``). Each runs on its
own over stdio or streamable HTTP (``testbed serve NAME``, or ``python -m
servers NAME``). What a server *declares* lives in its tool schemas (the
extension keywords of :mod:`testbed.protocol`); what it *actually* does is its
truth manifest, which the testbed keeps and never sends.
"""

import importlib

MODULES = (
    "detect_xyxy",
    "detect_cxcywh",
    "detect_yxyx",
    "detect_xywh_bl",
    "segment_rle",
    "segment_polygon",
    "segment_png",
    "crop_xywh",
    "crop_handle",
    "crop_masked",
    "crop_ttl",
    "parametric",
)
"""Every reference server's module; importing one registers it, so this order is the order they are listed in."""

for _module in MODULES:
    importlib.import_module(f"servers.{_module}")
importlib.import_module("servers.vulnerable")  # the deliberately vulnerable vuln-* servers
importlib.import_module("servers.cases")  # the case-study case-* servers, listed last

__all__ = ["MODULES"]
