"""``testbed servers``, ``testbed serve`` and ``testbed plugins``: what the registry holds, and serving it."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from testbed.registry import registry
from testbed.serve import DEFAULT_MAX_BODY
from testbed.serve import serve as serve_server
from testbed.server_config import ServerConfig, read_profile
from testbed.transport import SERVED_TRANSPORTS


@click.command(name="servers")
def list_servers() -> None:
    """List the registered servers, what they declare and what they actually do."""
    table = Table(title="registered servers (truth manifests)", show_lines=True)
    for column in ("server", "kind", "declares", "tools", "conventions", "memory"):
        table.add_column(column)
    for name, plugin in registry().servers.items():
        truth = plugin.truth
        conventions = []
        memory = []
        for tool in truth.tools:
            if tool.box_convention is not None:
                conventions.append(f"{tool.name}: boxes {tool.box_convention}")
            if tool.mask_encoding is not None:
                conventions.append(f"{tool.name}: masks {tool.mask_encoding} @ {tool.mask_resolution}")
            if tool.shape_order is not None:
                conventions.append(f"{tool.name}: size as {tool.shape_order}")
            if tool.accepts or tool.returns:
                accepts = ",".join(scope.value for scope in tool.accepts) or "-"
                returns = tool.returns.value if tool.returns else "-"
                memory.append(f"{tool.name}: in {accepts}; out {returns}")
        table.add_row(
            name,
            truth.kind,
            "yes" if truth.declares_conventions else "no",
            "\n".join(f"{t.name} ({t.schema_style})" for t in truth.tools),
            "\n".join(conventions),
            "\n".join(memory),
        )
    Console().print(table)


@click.command()
@click.argument("name")
@click.option("--transport", type=click.Choice(SERVED_TRANSPORTS), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--sandbox", type=click.Path(path_type=Path), default=None, help="The only folder the server touches.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: $TESTBED_DEVICE or auto).")
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BODY,
    show_default=True,
    help="Largest HTTP request body in bytes; an image sent by value counts 4/3 of its file size.",
)
@click.option(
    "--profile",
    default=None,
    help="A parametric server's convention profile: JSON, or a JSON/YAML file (default: $TESTBED_PROFILE).",
)
def serve(
    name: str,
    transport: str,
    host: str,
    port: int,
    sandbox: Path | None,
    device: str | None,
    max_body: int,
    profile: str | None,
) -> None:
    """Run registered server NAME on its own (stdio, or streamable HTTP at http://HOST:PORT/mcp).

    Built-in servers have bare names (detect-xyxy); a plug-in's are DISTRIBUTION/NAME.
    """
    chosen = read_profile(profile, what="--profile") if profile is not None else None
    config = ServerConfig.from_env(device=device, sandbox=sandbox, profile=chosen)
    serve_server(name, transport=transport, host=host, port=port, config=config, max_body=max_body)  # type: ignore[arg-type]


@click.command()
def plugins() -> None:
    """List every registered plug-in (servers, agents, fault kinds, validators, task checkers, scene sources)."""
    reg = registry()
    table = Table(title="registered plug-ins", show_lines=False)
    for column in ("kind", "name", "from"):
        table.add_column(column)
    rows = [
        *(("server", name, str(p.origin)) for name, p in reg.servers.items()),
        *(("agent", name, str(p.origin)) for name, p in reg.agents.items()),
        *(("fault kind", name, str(p.origin)) for name, p in reg.faults.items()),
        *(("validator", name, str(p.origin)) for name, p in reg.validators.items()),
        *(("task checker", name, str(p.origin)) for name, p in reg.tasks.items()),
        *(("scene source", name, str(p.origin)) for name, p in reg.scene_sources.items()),
    ]
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    loaded = sum(point.error is None for point in reg.entry_points)
    console.print(f"entry points (group mcp_vision_testbed): {loaded} loaded, {len(reg.entry_points) - loaded} failed")
    for point in reg.entry_points:
        status = f"failed: {point.error}" if point.error else f"{len(point.registered)} registered"
        console.print(f"  {point.name} = {point.value} ({point.distribution}): {status}")
