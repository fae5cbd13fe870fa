"""The one interface of every retrieval method, DGI and each baseline: fit, rank, details, save, load.

`dgi benchmark` runs every method through it and nothing else, so a result means the same for each.
Methods whose fitted state is a few parameters and tensors share `SavedState`'s directory format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from torch import Tensor

from dgi.data.corpus import EncodedCorpus
from dgi.io import CorruptFileError, atomic_directory, load_tensors, read_versioned_json, save_tensors, write_json

FORMAT, VERSION = "dgi-method", 1
MANIFEST, STATE = "method.json", "state.safetensors"


@dataclass
class MethodDetails:
    """What a benchmark records about a fitted method beside its ranking (None: does not apply)."""

    train_seconds: float | None = None
    item_norms: np.ndarray | None = None            # [items] norm of the vector each item is scored with
    grad_norms: np.ndarray | None = None            # [steps] item-tower gradient norm per training step
    index: dict | None = None                       # SID index health (collisions, code usage)
    invalid_sid_rate: float | None = None           # share of unconstrained beams that name no item
    ranked_with: str | None = None                  # "dense" or "generative/<rule>" (the rule chosen on valid)
    valid_rule_scores: dict[str, float] | None = None
    rules: dict[str, dict[str, float]] | None = None         # every ranking method's metrics on the split
    rule_buckets: dict[str, dict[str, float]] | None = None  # ... and their hit@10 per popularity bucket
    query_ms: float | None = None  # the returned ranking's own time per query, where rank() computed more


@runtime_checkable
class Method(Protocol):
    name: ClassVar[str]

    def fit(self, corpus: EncodedCorpus) -> Method:
        """Train (or index) on the corpus's train split; validation only for model selection."""

    def rank(self, corpus: EncodedCorpus, split: str, k: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices [n, k] (-1 padded) and scores [n, k] for the first `limit` examples of `split`."""

    def details(self, corpus: EncodedCorpus, split: str) -> MethodDetails:
        """What the benchmark reports beside the ranking; call after `rank` on the same split."""

    def save(self, directory: str | Path) -> Path:
        """Write the fitted method whole (atomically) into `directory`."""

    @classmethod
    def load(cls, directory: str | Path) -> Method:
        """The method `save` wrote, ready to `rank`."""


class SavedState:
    """save / load through `state()` (JSON-able parameters + named tensors) and `from_state()`.

    The directory holds `method.json` (format, version, the method's name and parameters) and
    `state.safetensors`; it is written into a temporary sibling and renamed into place.
    """

    name: ClassVar[str]

    def state(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, params: dict[str, Any], tensors: dict[str, Tensor]) -> SavedState:
        raise NotImplementedError

    def details(self, corpus: EncodedCorpus, split: str) -> MethodDetails:
        return MethodDetails()

    def save(self, directory: str | Path) -> Path:
        params, tensors = self.state()
        with atomic_directory(directory) as tmp:
            write_manifest(tmp, self.name, params)
            save_tensors(tmp / STATE, tensors)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> SavedState:
        return cls.from_state(read_manifest(directory, cls.name), load_tensors(Path(directory) / STATE))


def write_manifest(directory: Path, name: str, params: dict[str, Any]) -> None:
    write_json(directory / MANIFEST, {"format": FORMAT, "version": VERSION, "method": name, "params": params})


def saved_method_name(directory: str | Path) -> str:
    """The name of the method saved in `directory` (its `method.json`)."""
    return _manifest(directory)["method"]


def read_manifest(directory: str | Path, name: str) -> dict[str, Any]:
    """The parameters of the `name` method saved in `directory`; anything else is a CorruptFileError."""
    manifest = _manifest(directory)
    if manifest["method"] != name:
        raise CorruptFileError(Path(directory) / MANIFEST, f"holds a {manifest['method']!r} method, not {name!r}",
                               "load it with dgi.methods.registry.load_method")
    return dict(manifest.get("params") or {})


def _manifest(directory: str | Path) -> dict[str, Any]:
    """The checked `method.json` of a saved method; a missing or foreign file is a CorruptFileError."""
    path = Path(directory) / MANIFEST
    manifest = read_versioned_json(path, FORMAT, VERSION, "missing: not a saved method directory",
                                   "save the method again with this version of dgi")
    if not isinstance(manifest.get("method"), str):
        raise CorruptFileError(path, "names no method")
    return manifest
