"""Shared fixtures: one tiny synthetic dataset encoded with the real packaged text encoder, one trained run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory) -> Path:
    """A session-wide embedding cache, so the real encoder runs once per text."""
    path = tmp_path_factory.mktemp("embedding-cache")
    os.environ["DGI_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> Path:
    from dgi.data import generate_synthetic

    path = tmp_path_factory.mktemp("tiny-data")
    generate_synthetic(n_items=400, n_examples=3000, seed=7).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_config(tiny_dataset_dir, embedding_cache):
    from dgi.config import load_config

    return load_config([], [
        f"data.path={tiny_dataset_dir}", f"encoder.cache_dir={embedding_cache}",
        "model.width=32", "model.context_layers=1", "model.decoder_layers=1", "model.attention_heads=2",
        "train.batch_size=64", "train.dense_epochs=1", "train.joint_epochs=2", "train.quantizer_epochs=1",
        "train.eval_examples=200", "train.warmup_steps=10", "search.beam_size=10", "search.rerank_beam_size=20",
    ])


@pytest.fixture(scope="session")
def tiny_corpus(tiny_config):
    from dgi.pipeline import prepare_corpus

    return prepare_corpus(tiny_config)


@pytest.fixture(scope="session")
def trained_run(tiny_config, tiny_corpus, tmp_path_factory) -> Path:
    from dgi.pipeline import train

    run_dir = tmp_path_factory.mktemp("runs") / "dgi"
    train(tiny_config, run_dir, tiny_corpus, progress=False)
    return run_dir
