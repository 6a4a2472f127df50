"""Server resolvers: how each alias of a scenario becomes something the pool can (re)start.

The runner receives one resolver and never looks servers up itself. Recording
uses :func:`live_servers` (a registered server is built in process or started
as its own process; an external ``command`` or ``url`` is started or reached
as it is); replay uses :func:`recorded_servers` (every alias is served from its
recording: no registry, no process, whatever the server was).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from testbed._errors import TestbedError, WeightsError
from testbed.events import ExperimentHeader, LoadedWeights
from testbed.orchestrator._pool import ServerSpec
from testbed.protocol import ServerTruth
from testbed.registry import ServerPlugin, registry
from testbed.scenario import Scenario, ServerRef
from testbed.server_config import ServerConfig
from testbed.transport import (
    ExternalServer,
    ReplayTransport,
    ServerRecording,
    TransportKind,
    served_environment,
    server_environment,
)
from testbed.vision import SHIPPED_MODELS, WEIGHTS_DIR
from testbed.vision._weights import file_sha256

__all__ = ["WEIGHT_TASKS", "ServerResolver", "configured_weights", "live_servers", "recorded_servers"]

ServerResolver = Callable[[Scenario], dict[str, ServerSpec]]
"""Resolves every server alias of a scenario into how to (re)start it."""

WEIGHT_TASKS: Final[dict[str, tuple[str, ...]]] = {"detection": ("detect",), "segmentation": ("segment",)}
"""The models a registered server of each kind (its truth manifest's ``kind``) loads; cropping servers load none."""


def live_servers(*, sandbox: Path, device: str, transport: TransportKind | None = None) -> ServerResolver:
    """Registered servers from the registry (``transport`` overrides theirs), external ones as they are.

    The returned resolver raises :class:`TestbedError` for a name the registry does not hold.
    """

    def resolve(scenario: Scenario) -> dict[str, ServerSpec]:
        return {
            alias: _live(alias, ref, sandbox=sandbox, device=device, transport=transport)
            for alias, ref in scenario.servers.items()
        }

    return resolve


def _live(alias: str, ref: ServerRef, *, sandbox: Path, device: str, transport: TransportKind | None) -> ServerSpec:
    if ref.server is None:
        external = ExternalServer(command=ref.command, env=dict(ref.env), cwd=ref.cwd, url=ref.url)
        return ServerSpec(
            alias=alias, server=ref.display_name, transport=external.transport, truth=ref.truth, external=external
        )
    plugin = registry().server(ref.server)
    chosen = transport or ref.transport
    # The configuration the server gets: this process's for an in-process one, else the one its
    # process reads from the environment it is started with.
    environ = None if chosen == "inprocess" else server_environment(sandbox, device)
    config = ServerConfig.from_env(environ, device=device, sandbox=sandbox, profile=ref.profile)
    if ref.profile is not None and chosen != "inprocess":
        return _profiled_process(alias, ref, config, chosen, sandbox=sandbox, device=device)
    return ServerSpec(
        alias=alias,
        server=ref.server,
        transport=chosen,
        truth=ref.truth if ref.truth is not None else plugin.truth,
        factory=functools.partial(_built_and_loaded, plugin, config),
        weights=configured_weights(config, WEIGHT_TASKS.get(plugin.truth.kind, ())),
    )


def _profiled_process(
    alias: str, ref: ServerRef, config: ServerConfig, transport: TransportKind, *, sandbox: Path, device: str
) -> ServerSpec:
    """A parametric server with a profile in its own process: ``testbed serve NAME --profile JSON`` over stdio."""
    assert ref.server is not None
    assert ref.profile is not None
    assert ref.truth is not None
    if transport != "stdio":
        raise TestbedError(f"server {alias!r}: a server with a profile runs inprocess or over stdio, not {transport}")
    command = (
        *(sys.executable, "-m", "testbed", "serve", ref.server, "--transport", "stdio"),
        *("--sandbox", str(sandbox), "--device", device, "--profile", ref.profile.model_dump_json()),
    )
    external = ExternalServer(command=command, env=served_environment(sandbox, device))
    return ServerSpec(
        alias=alias,
        server=ref.server,
        transport="stdio",
        truth=ref.truth,
        external=external,
        weights=configured_weights(config, WEIGHT_TASKS.get(ref.truth.kind, ())),
    )


def recorded_servers(
    header: ExperimentHeader, recordings: Mapping[str, ServerRecording], *, source: Path
) -> ServerResolver:
    """Every alias served from its recording, named and described as the header recorded it.

    The returned resolver raises :class:`TestbedError` for an alias nothing was recorded for.
    """
    records = {record.alias: record for record in header.servers}

    def resolve(scenario: Scenario) -> dict[str, ServerSpec]:
        specs = {}
        for alias, ref in scenario.servers.items():
            recording = recordings.get(alias)
            if recording is None:
                raise TestbedError(f"{source}: nothing recorded for server {alias!r}")
            record = records.get(alias)
            factory: Callable[[], Any] = functools.partial(ReplayTransport, recording)
            specs[alias] = ServerSpec(
                alias=alias,
                server=record.server if record is not None else (ref.server or alias),
                transport=ref.transport,
                truth=ServerTruth.model_validate(record.truth) if record is not None and record.truth else None,
                replay_factory=factory,
            )
        return specs

    return resolve


def _built_and_loaded(plugin: ServerPlugin, config: ServerConfig) -> Any:
    """An in-process server whose model is loaded and warm, like a stdio server's before it serves."""
    server = plugin.build(config)
    if plugin.preload is not None:
        plugin.preload(config)
    return server


_hashes: dict[tuple[Path, int, int], str] = {}
"""sha256 of weights files by (path, size, modification time): a file is hashed once per process."""


def configured_weights(config: ServerConfig, tasks: Iterable[str]) -> dict[str, LoadedWeights]:
    """The weights file ``config`` makes a server load for each task (as ``servers`` resolves it), hashed."""
    found: dict[str, LoadedWeights] = {}
    for task in tasks:
        configured = config.detect_weights if task == "detect" else config.segment_weights
        path = (configured or WEIGHTS_DIR / SHIPPED_MODELS[task]).resolve()
        found[task] = LoadedWeights(path=str(path), sha256=_sha256(path))
    return found


def _sha256(path: Path) -> str | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (path, stat.st_size, stat.st_mtime_ns)
    digest = _hashes.get(key)
    if digest is None:
        try:
            digest = _hashes[key] = file_sha256(path)
        except WeightsError:
            return None
    return digest
