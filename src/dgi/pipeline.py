"""The orchestration users call: prepare -> train -> load -> evaluate. Each step is one function."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from dgi.config import Config, ConfigError, load_config
from dgi.data.corpus import EncodedCorpus, encode_corpus
from dgi.data import carve_message, carve_validation, load_dataset
from dgi.device import resolve_device, set_threads
from dgi.data.encoders import EmbeddingCache, cached_encoder
from dgi.evaluation.evaluate import evaluate, filled_rankings
from dgi.search.index import SIDIndex
from dgi.io import write_json
from dgi.evaluation.metrics import write_trec_run
from dgi.model_dir import find_model_dir, is_model_dir
from dgi.retriever import Retriever
from dgi.training.distributed import ProcessGroup
from dgi.training.run import RunDirectory
from dgi.training.trainer import Trainer, build_model

MIN_JOINT_STEPS = 1500
"""Optimizer steps the joint phase of a DSI-style run gets at least (`schedule_for`): the decoder learns a
document's SID only from its indexing example, seen once per epoch, and on a corpus of a few thousand
documents the default 3 joint epochs are a few dozen steps."""

TREC_DEPTH = 100
"""Results per query in the TREC run files of `evaluate_run` (the usual depth of TREC-style evaluation)."""


def _note(message: str) -> None:
    """A line on stderr for what the pipeline decided on its own, so logs of a run say it."""
    print(message, file=sys.stderr, flush=True)


def text_encoder(config: Config) -> EmbeddingCache:
    return cached_encoder(config.encoder.model, config.encoder.batch_size, config.encoder.cache_dir)


def use_threads(config: Config) -> None:
    """`train.threads`, when set, for all a command does: set before the text encoding and the dataset
    preparation, which would otherwise run on torch's default of every core (two single-thread jobs on
    two cores each encoding on both oversubscribe them)."""
    if config.train.threads:
        set_threads(config.train.threads)


def prepare_corpus(config: Config) -> EncodedCorpus:
    if config.data.path is None:
        raise ValueError("no dataset: set data.path (a directory with items.jsonl, train.jsonl, test.jsonl)")
    dataset = load_dataset(config.data.path)
    if not dataset.splits["valid"]:  # nothing to select epochs and rules on: carve it from train
        data = config.data
        dataset = carve_validation(dataset, data.valid_carve_ratio, config.train.seed, data.valid_carve_max)
        _note(carve_message(dataset.meta["valid_carve"]))
    return encode_corpus(dataset, text_encoder(config), config.data.max_history, config.data.indexing_ratio,
                         config.train.seed, config.data.indexing_spans)


def schedule_for(config: Config, n_train_examples: int, min_joint_steps: int = MIN_JOINT_STEPS) -> Config:
    """`config`, with train.joint_epochs raised to ceil(min_joint_steps / steps per epoch) for a DSI-style run.

    Only a run with indexing examples (data.indexing_ratio > 0) and a joint phase changes: there the
    decoder must learn every document's SID from the indexing examples, so the schedule follows the
    number of steps, not a fixed epoch count. A configured value is never lowered (an explicitly set
    train.joint_epochs cannot be told from the default, so it is raised as well); the change is noted.
    `n_train_examples` counts the train arrays, indexing examples included.
    """
    t = config.train
    steps_per_epoch = -(-n_train_examples // t.batch_size)
    if config.data.indexing_ratio == 0 or not t.joint_epochs or not steps_per_epoch:
        return config
    epochs = -(-min_joint_steps // steps_per_epoch)
    if epochs <= t.joint_epochs:
        return config
    _note(f"DSI-style run (data.indexing_ratio={config.data.indexing_ratio}): train.joint_epochs raised from "
          f"{t.joint_epochs} to {epochs}, so that the joint phase has at least {min_joint_steps} steps "
          f"({steps_per_epoch} per epoch)")
    return config.model_copy(update={"train": t.model_copy(update={"joint_epochs": epochs})})


def train(config: Config, run_dir: str | Path, corpus: EncodedCorpus | None = None, progress: bool = True,
          min_joint_steps: int = MIN_JOINT_STEPS) -> RunDirectory:
    """Train a new run into `run_dir` (which must not hold a run yet).

    A DSI-style run trains at least `min_joint_steps` joint steps (`schedule_for`); config.yaml holds
    the schedule trained, run.json the configured joint epochs when they were raised and the carved
    validation split (`prepare_corpus`) when there is one.
    """
    run = RunDirectory(Path(run_dir))
    group = ProcessGroup.from_environment(resolve_device(config.train.device))  # one process unless torchrun
    if run.exists():
        raise FileExistsError(f"{run.path} already holds a run: use `dgi train --resume {run.path}` or a new --out")
    group.barrier()  # every process has looked before process 0 creates the run
    use_threads(config)
    corpus = corpus or prepare_corpus(config)
    configured = config
    config = schedule_for(config, len(corpus.splits["train"].targets), min_joint_steps)
    config = config.model_copy(update={"data": config.data.model_copy(update={"path": Path(config.data.path).resolve()})})
    trainer = Trainer(config, corpus, run, progress, group)
    info = {"dataset": str(config.data.path), "encoder": corpus.encoder_name,
            "embedding_cache": str(text_encoder(config).directory), "text_dim": int(corpus.item_embeddings.shape[1]),
            "codebook_sizes": trainer.model.quantizer.codebook_sizes, "n_items": len(corpus.item_ids)}
    if config.train.joint_epochs != configured.train.joint_epochs:
        info["configured_joint_epochs"] = configured.train.joint_epochs
    if "valid_carve" in corpus.dataset.meta:
        info["valid_carve"] = corpus.dataset.meta["valid_carve"]
    if group.is_main:
        run.create(config, info)
    trainer.fit()
    if group.is_main:
        export_model(run, corpus)
    group.barrier()
    return run


def resume(run_dir: str | Path, progress: bool = True) -> RunDirectory:
    """Continue an interrupted run from its last checkpoint."""
    run = RunDirectory(Path(run_dir))
    config = run.config()
    use_threads(config)
    corpus = prepare_corpus(config)
    trainer = Trainer(config, corpus, run, progress)
    trainer.resume()
    trainer.fit()
    if trainer.group.is_main:
        export_model(run, corpus)
    trainer.group.barrier()
    return run


def export_model(run: RunDirectory, corpus: EncodedCorpus | None = None, out: str | Path | None = None) -> Path:
    """Write the best checkpoint as a self-contained model directory (default: RUN/model, which
    `load_retriever(RUN)` then loads without the dataset). A run that has one already is copied from it."""
    if corpus is None and out is not None and is_model_dir(run.model_dir):
        return Retriever.load(run.model_dir).save(out)
    return load_trained(run, corpus).save(out or run.model_dir)


def load_retriever(path: str | Path) -> Retriever:
    """A model directory (`Retriever.save`), or a run directory: its exported model/ when training wrote
    one (no dataset needed), else its best checkpoint over the re-prepared dataset."""
    model_dir = find_model_dir(path)
    return Retriever.load(model_dir) if model_dir else load_trained(RunDirectory(Path(path)))


def load_trained(run: RunDirectory, corpus: EncodedCorpus | None = None, device: str | None = None) -> Retriever:
    """The best checkpoint of a run with its SID index (none for a dual encoder), ready for `search`.

    `device` defaults to CPU: serving does not need the accelerator a run may have trained on.
    """
    return _load_trained(run, corpus, device)[0]


def _load_trained(run: RunDirectory, corpus: EncodedCorpus | None, device: str | None) -> tuple[Retriever, EncodedCorpus]:
    """`load_trained`, and the corpus as the model embeds it: re-embedded by a fine-tuned text backbone."""
    config = run.config()
    if not run.best_file.exists():
        raise FileNotFoundError(f"{run.path} has no trained model yet (model.safetensors)")
    corpus = corpus or prepare_corpus(config)
    model = build_model(config, corpus)
    RunDirectory.load_weights(run.best_file, model)
    encoder = text_encoder(config)
    if model.text_backbone is not None:  # the fine-tuned backbone embeds the corpus and new queries
        encoder = model.text_backbone
        corpus = corpus.encoded_with(encoder)
    target = resolve_device(device or "cpu")
    index = SIDIndex.load(run.index_file) if run.index_file.exists() else None
    texts = [item.text for item in corpus.dataset.items]
    model = model.to(target).eval()
    with torch.no_grad():
        vectors = model.catalog_vectors(corpus.item_embeddings.to(target))
    counts = torch.from_numpy(corpus.popularity)  # the training interactions the decoder's prior comes from
    return Retriever(model, index, vectors, corpus.item_ids, texts, config.search, encoder, counts), corpus


def searched_with(config: Config, overrides: Sequence[str]) -> Config:
    """`config` with `search.key=value` overrides applied; any other section is refused (the model was
    trained with it)."""
    trained = [override for override in overrides if not override.startswith("search.")]
    if trained:
        raise ConfigError(f"only search.* settings can change after training, got {', '.join(trained)}")
    return load_config([], overrides, base=config.model_dump(mode="json")) if overrides else config


def evaluate_run(run_dir: str | Path, split: str = "test", out_dir: str | Path | None = None,
                 limit: int | None = None, corpus: EncodedCorpus | None = None, device: str | None = None,
                 trec_depth: int = TREC_DEPTH, search: Sequence[str] = ()) -> dict:
    """Evaluate the best checkpoint; write metrics.json and one TREC run per method to RUN/eval-SPLIT/.

    metrics.json holds each method's metrics at k <= 20 on its own ranking (`evaluate`). The run files,
    run.generative-{lexicographic,fused,rerank}.trec and run.dense.trec (only the dense one for a dual
    encoder) plus run.trec (the default method's), list `trec_depth` items per query, or every item
    when the corpus has fewer. A generative rule ranks only the items of its beams' SID buckets, often
    fewer: the same model's dense ranking fills the remaining ranks (items not listed yet, in dense
    order) with scores strictly below the rule's, so tools that order by score keep the ranks
    (`fill_ranking`). Where a rule returned fewer than 20 items, its file's top 20 thus hold dense
    items that metrics.json did not score.

    `search` overrides (`search.key=value`) change how the trained model searches (beam width, fusion
    weight, ...), never what it learnt; they need their own `out_dir`, so the run's own evaluation is
    not replaced by a variant's.
    """
    if trec_depth < 1:
        raise ValueError(f"trec_depth must be >= 1, got {trec_depth}")
    run = RunDirectory(Path(run_dir))
    config = searched_with(run.config(), search)
    if search and out_dir is None:
        raise ValueError("search overrides need their own output directory (--out), so the run's "
                         f"eval-{split} is not replaced by a variant's")
    use_threads(config)
    corpus = corpus or prepare_corpus(config)
    if split not in corpus.splits or not len(corpus.splits[split].targets):
        raise ValueError(f"split {split!r} is empty or missing in {config.data.path}")
    retriever, corpus = _load_trained(run, corpus, device)
    retriever.search_config = config.search
    with torch.no_grad():
        report, rankings = evaluate(retriever, corpus, split, limit=limit, depth=trec_depth)
    report["search_overrides"] = list(search)
    runs = filled_rankings(rankings)
    out = Path(out_dir) if out_dir else run.path / f"eval-{split}"
    write_json(out / "metrics.json", report)
    example_ids = corpus.splits[split].example_ids[: report["n_examples"]]
    files = {f"run.{method.replace('/', '-')}.trec": method for method in runs} | {"run.trec": report["default_method"]}
    for file, method in files.items():
        ranked, scores = runs[method]
        write_trec_run(out / file, example_ids, ranked, scores, corpus.item_ids,
                       f"{config.name}-{method.replace('/', '-')}")
    return report
