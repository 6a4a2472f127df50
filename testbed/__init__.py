"""mcp-vision-testbed: a controlled testbed for Model Context Protocol vision tool chains.

The executable form of the audit "Model Context Protocol for Vision Systems:
Audit, Security, and Protocol Extensions" (arXiv 2509.22814).
"""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("mcp-vision-testbed")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from testbed.analysis import open_experiment

__all__ = ["__version__", "open_experiment"]


def __getattr__(name: str) -> Any:
    # ``testbed.open_experiment`` loads its module on first use: it pulls in the validators (about a second
    # to import), which every process that imports any testbed module (stdio servers included) would otherwise pay.
    if name == "open_experiment":
        return importlib.import_module("testbed.analysis").open_experiment
    raise AttributeError(f"module 'testbed' has no attribute {name!r}")
