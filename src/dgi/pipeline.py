"""The orchestration users call: prepare -> train -> load -> evaluate. Each step is one function."""

from __future__ import annotations

from pathlib import Path

import torch

from dgi.config import Config
from dgi.corpus import EncodedCorpus, encode_corpus
from dgi.data import load_dataset
from dgi.device import resolve_device
from dgi.encoders import EmbeddingCache, cached_encoder
from dgi.evaluate import evaluate
from dgi.index import SIDIndex
from dgi.io import write_json
from dgi.metrics import write_trec_run
from dgi.retriever import Retriever
from dgi.run import RunDirectory
from dgi.train import Trainer, build_model


def text_encoder(config: Config) -> EmbeddingCache:
    return cached_encoder(config.encoder.model, config.encoder.batch_size, config.encoder.cache_dir)


def prepare_corpus(config: Config) -> EncodedCorpus:
    if config.data.path is None:
        raise ValueError("no dataset: set data.path (a directory with items.jsonl, train.jsonl, test.jsonl)")
    return encode_corpus(load_dataset(config.data.path), text_encoder(config), config.data.max_history,
                         config.data.indexing_ratio, config.train.seed)


def train(config: Config, run_dir: str | Path, corpus: EncodedCorpus | None = None, progress: bool = True) -> RunDirectory:
    """Train a new run into `run_dir` (which must not hold a run yet)."""
    run = RunDirectory(Path(run_dir))
    if run.exists():
        raise FileExistsError(f"{run.path} already holds a run: use `dgi train --resume {run.path}` or a new --out")
    corpus = corpus or prepare_corpus(config)
    config = config.model_copy(update={"data": config.data.model_copy(update={"path": Path(config.data.path).resolve()})})
    trainer = Trainer(config, corpus, run, progress)
    run.create(config, {"dataset": str(config.data.path), "encoder": corpus.encoder_name,
                        "embedding_cache": str(text_encoder(config).directory),
                        "text_dim": int(corpus.item_embeddings.shape[1]),
                        "codebook_sizes": trainer.model.quantizer.codebook_sizes, "n_items": len(corpus.item_ids)})
    trainer.fit()
    return run


def resume(run_dir: str | Path, progress: bool = True) -> RunDirectory:
    """Continue an interrupted run from its last checkpoint."""
    run = RunDirectory(Path(run_dir))
    config = run.config()
    trainer = Trainer(config, prepare_corpus(config), run, progress)
    trainer.resume()
    trainer.fit()
    return run


def load_trained(run: RunDirectory, corpus: EncodedCorpus | None = None, device: str | None = None) -> Retriever:
    """The best checkpoint of a run with its SID index (none for a dual encoder), ready for `search`.

    `device` defaults to CPU: serving does not need the accelerator a run may have trained on.
    """
    config = run.config()
    if not run.best_file.exists():
        raise FileNotFoundError(f"{run.path} has no trained model yet (model.safetensors)")
    corpus = corpus or prepare_corpus(config)
    model = build_model(config, corpus)
    RunDirectory.load_weights(run.best_file, model)
    target = resolve_device(device or "cpu")
    index = SIDIndex.load(run.index_file) if run.index_file.exists() else None
    texts = [item.text for item in corpus.dataset.items]
    return Retriever(model.to(target).eval(), index, corpus.item_embeddings.to(target), corpus.item_ids, texts,
                     config.search, text_encoder(config))


def evaluate_run(run_dir: str | Path, split: str = "test", out_dir: str | Path | None = None,
                 limit: int | None = None, corpus: EncodedCorpus | None = None, device: str | None = None) -> dict:
    """Evaluate the best checkpoint; write metrics.json and run.trec (default rule) to RUN/eval-SPLIT/."""
    run = RunDirectory(Path(run_dir))
    config = run.config()
    corpus = corpus or prepare_corpus(config)
    if split not in corpus.splits or not len(corpus.splits[split].targets):
        raise ValueError(f"split {split!r} is empty or missing in {config.data.path}")
    retriever = load_trained(run, corpus, device)
    with torch.no_grad():
        report, rankings = evaluate(retriever, corpus, split, limit=limit)
    out = Path(out_dir) if out_dir else run.path / f"eval-{split}"
    write_json(out / "metrics.json", report)
    ranked, scores = rankings[report["default_method"]]
    example_ids = corpus.splits[split].example_ids[: len(ranked)]
    write_trec_run(out / "run.trec", example_ids, ranked, scores, corpus.item_ids, config.name)
    return report
