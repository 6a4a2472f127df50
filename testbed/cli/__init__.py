"""The ``testbed`` command line: a thin layer over the Python API."""

from __future__ import annotations

import click

from testbed import __version__
from testbed.cli._demo import demo
from testbed.cli._errors import TestbedGroup
from testbed.cli._models import models


@click.group(cls=TestbedGroup)
@click.version_option(__version__, prog_name="testbed")
def main() -> None:
    """mcp-vision-testbed: measure how MCP vision tool chains break, and whether protocol fixes help."""


main.add_command(demo)
main.add_command(models)

__all__ = ["main"]
