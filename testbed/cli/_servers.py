"""``testbed servers`` and ``testbed serve``: the reference servers."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from servers import SERVERS, ServerConfig
from servers import serve as serve_server


@click.command(name="servers")
def list_servers() -> None:
    """List the reference servers, what they declare and what they actually do."""
    table = Table(title="reference servers (truth manifests)", show_lines=True)
    for column in ("server", "kind", "declares", "tools", "conventions", "memory"):
        table.add_column(column)
    for name, entry in SERVERS.items():
        truth = entry.truth
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
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--sandbox", type=click.Path(path_type=Path), default=None, help="The only folder the server touches.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: $TESTBED_DEVICE or auto).")
def serve(name: str, transport: str, host: str, port: int, sandbox: Path | None, device: str | None) -> None:
    """Run reference server NAME on its own (stdio, or streamable HTTP at http://HOST:PORT/mcp)."""
    config = ServerConfig.from_env(device=device, sandbox=sandbox)
    serve_server(name, transport=transport, host=host, port=port, config=config)  # type: ignore[arg-type]
