"""How the testbed reaches a server: the one list of transport kinds, shared by scenarios, the CLI and serving."""

from __future__ import annotations

from typing import Final, Literal, get_args

TransportKind = Literal["inprocess", "stdio", "http"]
"""In the same process through memory streams, a subprocess speaking MCP over stdin/stdout, or a server
answering streamable HTTP on a local port."""

TRANSPORT_KINDS: Final[tuple[str, ...]] = get_args(TransportKind)
"""Every transport kind, for command-line choices."""

ServedTransport = Literal["stdio", "http"]
"""The transports a server process serves on its own (``testbed serve``)."""

SERVED_TRANSPORTS: Final[tuple[str, ...]] = get_args(ServedTransport)
