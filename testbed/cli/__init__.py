"""The ``testbed`` command line: a thin layer over the Python API."""

from __future__ import annotations

import logging

import click

from testbed import __version__
from testbed.cli._audit import audit_command
from testbed.cli._check import check
from testbed.cli._compare import compare
from testbed.cli._demo import demo
from testbed.cli._errors import TestbedGroup
from testbed.cli._experiment import experiment
from testbed.cli._fuzz import fuzz
from testbed.cli._models import models
from testbed.cli._population import population
from testbed.cli._replay import replay
from testbed.cli._report import report, show
from testbed.cli._reproduce import reproduce
from testbed.cli._run import run
from testbed.cli._scenario import scenario
from testbed.cli._servers import list_servers, plugins, serve
from testbed.cli._view import view


@click.group(cls=TestbedGroup)
@click.version_option(__version__, prog_name="testbed")
def main() -> None:
    """mcp-vision-testbed: measure how MCP vision tool chains break, and whether protocol fixes help."""
    # Warnings (e.g. a plug-in left out) are plain lines on stderr. Configured before any MCP server is built:
    # the SDK's MCPServer otherwise installs a line-wrapping rich handler on the root logger, at its own level.
    logging.basicConfig(format="%(message)s", level=logging.WARNING)


main.add_command(demo)
main.add_command(check)
main.add_command(models)
main.add_command(run)
main.add_command(experiment)
main.add_command(replay)
main.add_command(report)
main.add_command(compare)
main.add_command(show)
main.add_command(scenario)
main.add_command(list_servers)
main.add_command(serve)
main.add_command(plugins)
main.add_command(fuzz)
main.add_command(view)
main.add_command(audit_command)
main.add_command(population)
main.add_command(reproduce)

__all__ = ["main"]
