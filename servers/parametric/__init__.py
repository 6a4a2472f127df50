"""Parametric reference servers: one per capability, each built from a convention profile.

``detect``, ``segment``, ``crop``, ``crop-mask`` (the mask consumer) and
``measure`` (an object's physical size from a box and a pixel spacing) follow
the :class:`testbed.profile.ConventionProfile` in their configuration
(``ServerConfig.profile``; ``TESTBED_PROFILE`` for a server process); without
one they are well behaved (the profile's defaults). Their truth manifest is
:func:`testbed.profile.truth_manifest` of the same profile. They are composed
of the building blocks the named servers use (``servers._runtime``,
``_tools``, ``_schemas``, ``_stores``), so a preset profile
(:data:`testbed.profile.PRESETS`) answers as the named server it writes does.

Memory: the image comes by value, or through a store tool (``names.store_tool``)
that returns a session, global or TTL handle, a sandbox path, or (scope
``context``) a versioned ``context://`` reference into the protocol-native
context store (:mod:`servers.parametric._context`), also readable as an MCP resource; in that scope the
masks a segmenter returns and the crops a cropper returns are entries too (``mask_ref``, ``crop_ref`` beside
the values), which a mask consumer's ``mask`` and any image argument resolve. A TTL store
keeps images ``memory.ttl_seconds`` and declares ``memory.declared_ttl_seconds``.
``resource_uri`` masks are held by the process (shared by its parametric
servers) and resolvable only there. A profile that ``bridges`` adds a helper tool
(:mod:`servers.parametric._bridge`) that forwards calls to other servers out of band.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from servers._runtime import preload_detector, preload_segmenter
from servers._tools import ToolDef, build_mcp_server
from servers.parametric._bridge import bridge_tool
from servers.parametric._capabilities import capability_tool
from servers.parametric._context import ContextMemory
from servers.parametric._intake import Intake
from testbed.profile import Capability, ConventionProfile, ProfileError, check_profile, truth_manifest
from testbed.registry import server
from testbed.server_config import ServerConfig

__all__ = ["build_parametric"]


def build_parametric(capability: Capability, config: ServerConfig) -> MCPServer:
    """A ``capability`` server following ``config.profile`` (the defaults when it has none).

    Raises:
        ProfileError: the profile does not fit the capability.
    """
    profile = config.profile or ConventionProfile()
    try:
        check_profile(capability, profile)
    except ProfileError as error:
        raise ProfileError(f"profile.{'.'.join(map(str, error.loc))}: {error.message}", loc=error.loc) from None
    intake = Intake(profile, config, server=capability)
    instructions = f"A {capability} server."
    if profile.fallback is not None:
        instructions += f" Fallback: {profile.fallback}."
    built = build_mcp_server(
        capability,
        instructions=instructions,
        tools=[*intake.tools(), capability_tool(capability, profile, config, intake), *_bridge(profile, config)],
    )
    if isinstance(intake.store, ContextMemory):
        intake.store.expose(built)
    return built


def _bridge(profile: ConventionProfile, config: ServerConfig) -> list[ToolDef[Any]]:
    return [bridge_tool(profile, config)] if profile.bridges else []


_DEFAULT = ConventionProfile()


@server("detect", truth=truth_manifest("detect", _DEFAULT), preload=preload_detector)
def build_detect(config: ServerConfig) -> MCPServer:
    """Build the parametric detector."""
    return build_parametric("detect", config)


@server("segment", truth=truth_manifest("segment", _DEFAULT), preload=preload_segmenter)
def build_segment(config: ServerConfig) -> MCPServer:
    """Build the parametric segmenter."""
    return build_parametric("segment", config)


@server("crop", truth=truth_manifest("crop", _DEFAULT))
def build_crop(config: ServerConfig) -> MCPServer:
    """Build the parametric cropper."""
    return build_parametric("crop", config)


@server("crop-mask", truth=truth_manifest("crop-mask", _DEFAULT))
def build_crop_mask(config: ServerConfig) -> MCPServer:
    """Build the parametric mask consumer."""
    return build_parametric("crop-mask", config)


@server("measure", truth=truth_manifest("measure", _DEFAULT))
def build_measure(config: ServerConfig) -> MCPServer:
    """Build the parametric measuring server."""
    return build_parametric("measure", config)
