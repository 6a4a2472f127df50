"""A real llama.cpp OpenAI-compatible server (``python -m llama_cpp.server``) serving the packaged SmolLM2."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from testbed.llm import locate_smollm2
from testbed.transport import free_port

SERVER_MODEL = "smollm2"
"""The model name the server answers to (its ``--model_alias``)."""

STARTUP_TIMEOUT_S = 60.0
_POLL_INTERVAL_S = 0.2
_LOG_TAIL_CHARS = 3000


@contextmanager
def llama_server(
    model: Path | None = None, *, threads: int = 1, context: int = 2048, timeout_s: float = STARTUP_TIMEOUT_S
) -> Iterator[str]:
    """Run llama.cpp's server on a free local port for the duration of the block.

    Args:
        model: A GGUF file; the packaged SmolLM2-135M-Instruct by default.
        threads: Decoding threads.
        context: Context window in tokens.
        timeout_s: How long the server may take to answer ``GET /v1/models``.

    Yields:
        The base URL, ``http://127.0.0.1:PORT/v1``; requests name the model :data:`SERVER_MODEL`.

    Raises:
        RuntimeError: the server exited or did not answer in time (the message ends with its log).
    """
    path = model if model is not None else locate_smollm2()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(path),
        "--model_alias",
        SERVER_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--n_ctx",
        str(context),
    ]
    with tempfile.TemporaryDirectory(prefix="llama-server-") as folder:
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_until_serving(base_url, process, log_path, timeout_s)
                yield base_url
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def _wait_until_serving(base_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {process.returncode}; log:\n{_tail(log_path)}")
            try:
                if client.get(f"{base_url}/models").is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(_POLL_INTERVAL_S)
    raise RuntimeError(f"llama.cpp server did not answer within {timeout_s:g} s; log:\n{_tail(log_path)}")


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
