"""DGI behind the Method interface (and the dual encoder, its dense-only case: `train.joint_epochs=0`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from dgi import pipeline
from dgi.config import Config
from dgi.data.corpus import EncodedCorpus
from dgi.evaluation.evaluate import choose_rule, evaluate
from dgi.methods.base import MethodDetails
from dgi.retriever import Retriever
from dgi.training.run import RunDirectory


class DGIMethod:
    """`fit` trains a run directory (or finishes it when it exists: a benchmark resumes) and chooses the
    ranking rule on validation, which then becomes the model's configured rule; `rank` evaluates every
    ranking method of the split in one pass (kept for `details`) and returns the chosen one's.
    `save` writes the self-contained model directory (`Retriever.save`); `load` serves from one.
    """

    name: ClassVar[str] = "dgi"

    def __init__(self, config: Config | None = None, run_dir: str | Path | None = None, device: str = "cpu",
                 progress: bool = False) -> None:
        self.config, self.device, self.progress = config, device, progress
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.retriever: Retriever | None = None
        self.valid_rule_scores: dict[str, float] | None = None
        self._report: dict | None = None

    def fit(self, corpus: EncodedCorpus) -> DGIMethod:
        if self.run_dir is None or self.config is None:
            raise ValueError("DGIMethod.fit needs a config and a run directory")
        run = RunDirectory(self.run_dir)
        if run.exists():
            pipeline.resume(run.path, self.progress)  # finishes the remaining epochs (none if training ended)
        else:
            pipeline.train(self.config, run.path, corpus, self.progress)
        self.retriever = pipeline.load_trained(run, corpus, self.device)
        if self.retriever.index is not None:
            train = self.retriever.model.config.train
            with torch.no_grad():
                rule, self.valid_rule_scores = choose_rule(self.retriever, corpus, train.select_metric,
                                                           train.eval_examples)
            self._configure_rule(rule)
        return self

    def _configure_rule(self, rule: str) -> None:
        model = self._fitted().model
        search = model.config.search.model_copy(update={"rule": rule})
        model.config = model.config.model_copy(update={"search": search})
        self._fitted().search_config = search

    @property
    def ranked_with(self) -> str:
        """The method this one ranks with: "dense" (a dual encoder) or "generative/<configured rule>"."""
        retriever = self._fitted()
        return "dense" if retriever.index is None else f"generative/{retriever.search_config.rule}"

    def rank(self, corpus: EncodedCorpus, split: str, k: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            self._report, rankings = evaluate(self._fitted(), corpus, split, limit=limit, depth=k)
        ranked, scores = rankings[self.ranked_with]
        return ranked[:, :k], scores[:, :k]

    def details(self, corpus: EncodedCorpus, split: str) -> MethodDetails:
        if self._report is None or self._report["split"] != split:
            self.rank(corpus, split, 1)
        report, method = self._report, self.ranked_with
        train_seconds = grad_norms = None
        if self.run_dir is not None and RunDirectory(self.run_dir).exists():
            run = RunDirectory(self.run_dir)
            train_seconds = (run.state() or {}).get("train_seconds")
            records = [json.loads(line) for line in run.log_file.read_text(encoding="utf-8").splitlines() if line]
            grad_norms = np.array([norm for record in records for norm in record.get("item_grad_norm", [])],
                                  dtype=np.float32)
        methods = report["methods"]
        return MethodDetails(
            train_seconds=train_seconds, item_norms=self._fitted().item_vectors.norm(dim=-1).cpu().numpy(),
            grad_norms=grad_norms, index=report.get("index"), invalid_sid_rate=report.get("invalid_sid_rate"),
            ranked_with=method, valid_rule_scores=self.valid_rule_scores,
            rules={name: m["overall"] for name, m in methods.items()},
            rule_buckets={name: {bucket: values["hit@10"] for bucket, values in m["buckets"].items()}
                          for name, m in methods.items()},
            query_ms=methods[method]["query_ms"])

    def save(self, directory: str | Path) -> Path:
        return self._fitted().save(directory)

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> DGIMethod:
        method = cls(device=device)
        method.retriever = Retriever.load(directory, device)
        return method

    def _fitted(self) -> Retriever:
        if self.retriever is None:
            raise RuntimeError("dgi: fit() or load() it first")
        return self.retriever
