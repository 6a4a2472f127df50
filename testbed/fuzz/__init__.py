"""Property-based fuzzing of every registered server: malformed arguments in, and what each call came to.

Hypothesis derives the arguments from each tool's published ``inputSchema``
(wrong types, missing and extra fields, degenerate numbers, traversal paths,
truncated, corrupt, oversized and decompression-bomb images, random bytes as
base64) and an in-memory MCP client sends them. Each call is classified as ok,
a classified error (naming the argument and the problem), a generic internal
error, an unhelpful error, a crash or a hang; ``testbed fuzz`` prints the tally.
"""

from testbed.fuzz._classify import Outcome, Verdict, classify_result, error_text
from testbed.fuzz._payloads import FUZZ_MAX_PIXELS, image_payloads, png_declaring
from testbed.fuzz._runner import DEFAULT_TIMEOUT_S, Failure, ServerTally, fuzz_built, fuzz_server, fuzz_servers

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "FUZZ_MAX_PIXELS",
    "Failure",
    "Outcome",
    "ServerTally",
    "Verdict",
    "classify_result",
    "error_text",
    "fuzz_built",
    "fuzz_server",
    "fuzz_servers",
    "image_payloads",
    "png_declaring",
]
