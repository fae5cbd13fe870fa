"""The real packaged sentence encoder and the on-disk embedding cache."""

from __future__ import annotations

import numpy as np

from dgi.data.encoders import EmbeddingCache, SentenceTransformerEncoder


class CountingEncoder:
    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, []

    def encode(self, texts):
        self.calls.append(list(texts))
        return self.inner.encode(texts)


def test_packaged_minilm_gives_meaningful_normalized_embeddings():
    encoder = SentenceTransformerEncoder()
    vectors = encoder.encode(["red matte lipstick", "lipstick, matte finish, red", "stainless steel camping stove"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_cache_encodes_each_text_once_and_survives_reload(tmp_path):
    counting = CountingEncoder(SentenceTransformerEncoder())
    cache = EmbeddingCache(tmp_path, counting)
    first = cache.encode(["a blue tent", "hiking boots", "a blue tent"])
    assert counting.calls == [["a blue tent", "hiking boots"]]
    again = EmbeddingCache(tmp_path, counting).encode(["hiking boots", "a blue tent"])
    assert len(counting.calls) == 1
    assert np.array_equal(again, first[[1, 0]])
    EmbeddingCache(tmp_path, counting).encode(["hiking boots", "trail socks"])
    assert counting.calls[-1] == ["trail socks"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_is_keyed_by_model(tmp_path):
    class Fixed:
        def __init__(self, name, value):
            self.name, self.value = name, value

        def encode(self, texts):
            return np.full((len(texts), 4), self.value, dtype=np.float32)

    a = EmbeddingCache(tmp_path, Fixed("model-a", 0.5)).encode(["same text"])
    b = EmbeddingCache(tmp_path, Fixed("model-b", 0.25)).encode(["same text"])
    assert a[0, 0] == 0.5 and b[0, 0] == 0.25


def test_nan_from_an_encoder_is_an_error(tmp_path):
    class Broken:
        name = "broken"

        def encode(self, texts):
            return np.full((len(texts), 4), np.nan, dtype=np.float32)

    import pytest

    with pytest.raises(ValueError, match="NaN"):
        EmbeddingCache(tmp_path, Broken()).encode(["x"])
    assert not list(tmp_path.rglob("*.safetensors"))
