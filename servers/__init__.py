"""Reference and deliberately faulty vision MCP servers.

Each server is a real MCP server, runnable on its own over stdio or streamable
HTTP (``python -m servers NAME --transport stdio|http``). What a server
*declares* lives in its tool schemas (the extension keywords of
:mod:`testbed.protocol`); what it *actually* does is its truth manifest,
``SERVERS[name].truth``, which the testbed keeps and never sends.
"""

from servers._config import ServerConfig
from servers._registry import SERVERS, ServerEntry, get_server
from servers._runtime import preload_models
from servers._serve import serve

__all__ = ["SERVERS", "ServerConfig", "ServerEntry", "get_server", "preload_models", "serve"]
