"""mcp-vision-testbed: a controlled testbed for Model Context Protocol vision tool chains.

The executable form of the audit "Model Context Protocol for Vision Systems:
Audit, Security, and Protocol Extensions" (arXiv 2509.22814).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mcp-vision-testbed")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
