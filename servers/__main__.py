"""``python -m servers NAME --transport stdio|http``: run one registered server on its own (as ``testbed serve``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from testbed._errors import TestbedError
from testbed.registry import registry
from testbed.serve import serve
from testbed.server_config import ServerConfig

PROG = "python -m servers"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 0 and 65535")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run one reference vision MCP server.")
    parser.add_argument("name", help=f"server to run: {', '.join(registry().servers)}")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="default: stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="HTTP port; 0 picks a free one (default: 8000)")
    parser.add_argument("--sandbox", type=Path, help="directory for file-path servers (default: a fresh temp dir)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: $TESTBED_DEVICE or auto)")
    parser.add_argument("--imgsz", type=int, help="model input size (default: $TESTBED_IMGSZ or 320)")
    parser.add_argument("--detect-weights", type=Path, help="detection weights (default: the shipped ones)")
    parser.add_argument("--segment-weights", type=Path, help="segmentation weights (default: the shipped ones)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and serve; user errors print one line and return 2."""
    args = _parser().parse_args(argv)
    try:
        config = ServerConfig.from_env(
            device=args.device,
            imgsz=args.imgsz,
            sandbox=args.sandbox,
            detect_weights=args.detect_weights,
            segment_weights=args.segment_weights,
        )
        serve(args.name, transport=args.transport, host=args.host, port=args.port, config=config)
    except TestbedError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
