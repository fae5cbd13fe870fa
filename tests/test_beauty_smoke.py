"""CI smoke test on the real Amazon Beauty data: prepare, train a tiny model on a user subset, evaluate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dgi import pipeline
from dgi.config import load_config
from dgi.data import Dataset
from dgi.data.amazon import prepare_amazon

ROOT = Path(__file__).parents[1]
SHARED = Path(os.environ.get("DGI_SHARED_DATA", ROOT.parent / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (SHARED / "amazon-beauty").is_dir(), reason=f"no shared data at {SHARED}")


def user_subset(dataset: Dataset, n_users: int) -> Dataset:
    """The first `n_users` users' examples (ids are '{user}-{t}') and only the items they touch."""
    users = {example.id.rsplit("-", 1)[0] for example in dataset.splits["test"][:n_users]}
    splits = {name: [e for e in rows if e.id.rsplit("-", 1)[0] in users] for name, rows in dataset.splits.items()}
    used = {item for rows in splits.values() for e in rows for item in (e.target, *e.history)}
    items = [item for item in dataset.items if item.id in used]
    return Dataset(name=f"{dataset.name}-{n_users}-users", items=items, splits=splits, meta=dataset.meta)


def test_real_beauty_subset_trains_and_evaluates(tmp_path, embedding_cache):
    dataset = user_subset(prepare_amazon(SHARED / "amazon-beauty", "amazon-beauty"), 800)
    dataset.save(tmp_path / "data")
    config = load_config([ROOT / "configs" / "amazon-beauty.yaml"], [
        f"data.path={tmp_path / 'data'}", f"encoder.cache_dir={embedding_cache}", "model.width=64",
        "model.context_layers=1", "model.decoder_layers=1", "model.attention_heads=2",
        "quantizer.codebook_sizes=[32,32,32]", "loss.sampled_negatives=128", "train.batch_size=128",
        "train.lr=1e-4", "train.dense_epochs=1", "train.joint_epochs=1", "train.eval_examples=300",
        "train.warmup_steps=5",
    ])
    corpus = pipeline.prepare_corpus(config)
    run = pipeline.train(config, tmp_path / "run", corpus, progress=False)
    report = pipeline.evaluate_run(run.path, "test", corpus=corpus)
    assert report["n_examples"] == 800
    generative = report["methods"]["generative/lexicographic"]["overall"]
    dense = report["methods"]["dense"]["overall"]
    random_hit10 = 10 / len(dataset.items)
    # ~4,500 training examples are far too few to learn Beauty: this checks the plumbing on real data
    # (the model keeps the title-similarity signal it starts with), not the method's quality.
    assert dense["hit@10"] > 3 * random_hit10
    assert generative["hit@10"] > 3 * random_hit10
    assert 0.0 <= report["invalid_sid_rate"] <= 1.0
    assert set(report["methods"]["dense"]["buckets"]) == {"B0", "B1", "B2", "B3", "B4"}
