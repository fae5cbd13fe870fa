"""The self-contained model directory: all that search and serving need, nothing from training.

    model.json           format version, the typed config, the text encoder (name, dimension and a
                         fingerprint: its vector of a fixed probe text), codebook sizes, item count,
                         and the byte size + sha256 of every other file
    weights.safetensors  the model's weights
    catalog.safetensors  item vectors (fp16), SIDs (the smallest unsigned integer type that holds them) and,
                         where known, each item's training interactions (int32; search's popularity prior)
    items.jsonl          one {"id", "text"} per item, in catalog order

Loading needs no dataset, no embedding cache and no run files, so a directory can be copied to
another machine and served there. It is written into a temporary sibling and renamed into place
(complete or absent), and loading refuses a directory whose format, sizes or checksums do not match.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dgi.config import Config, ConfigError, load_config
from dgi.data.encoders import TextEncoder
from dgi.io import (
    CorruptFileError,
    atomic_directory,
    load_tensors,
    read_versioned_json,
    save_tensors,
    sha256_file,
    write_json,
    write_lines,
)

FORMAT = "dgi-model"
VERSION = 1
MANIFEST = "model.json"
WEIGHTS, CATALOG, ITEMS = "weights.safetensors", "catalog.safetensors", "items.jsonl"
PROBE_TEXT = "dgi text encoder fingerprint: a fixed sentence whose vector identifies the encoder"
FINGERPRINT_MIN_COSINE = 0.999  # the same weights on another CPU differ in the last bits, another model by far more


@dataclass(frozen=True)
class EncoderSpec:
    """Which text encoder a model was trained on; `fingerprint` is its unit vector of PROBE_TEXT."""

    name: str
    dim: int
    fingerprint: tuple[float, ...]

    @classmethod
    def of(cls, encoder: TextEncoder) -> EncoderSpec:
        vector = encoder.encode([PROBE_TEXT])[0]
        return cls(encoder.name, int(vector.shape[0]), tuple(float(v) for v in vector))

    def check(self, encoder: TextEncoder, source: Path) -> None:
        """Refuse an encoder that embeds differently from the one the model was trained on."""
        vector = np.asarray(encoder.encode([PROBE_TEXT])[0], dtype=np.float64)
        expected = np.asarray(self.fingerprint)
        cosine = float(vector @ expected / (np.linalg.norm(vector) * np.linalg.norm(expected) + 1e-12)) \
            if vector.shape == expected.shape else -1.0
        if cosine < FINGERPRINT_MIN_COSINE:
            raise CorruptFileError(source / MANIFEST, f"text encoder {encoder.name!r} does not match the one this "
                                   f"model was trained with ({self.name!r}, {self.dim}-d; fingerprint cosine {cosine:.4f})",
                                   "install that encoder")


@dataclass
class ModelFiles:
    """The contents of a model directory, in memory."""

    config: Config
    weights: dict[str, Tensor]
    item_vectors: Tensor          # [n_items, width]
    codes: Tensor | None          # [n_items, levels], None for a dense-only dual encoder
    item_ids: Sequence[str]
    item_texts: Sequence[str]
    encoder: EncoderSpec
    codebook_sizes: Sequence[int]
    trained_items: int            # items with a learned item-ID embedding (those present at training)
    item_counts: Tensor | None = None  # [n_items] training interactions per item (None: not recorded)

    def write(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        with atomic_directory(path) as tmp:
            save_tensors(tmp / WEIGHTS, self.weights)
            catalog = {"item_vectors": self.item_vectors.to(torch.float16)}
            if self.codes is not None:
                catalog["codes"] = self.codes.to(_code_dtype(self.codebook_sizes))
            if self.item_counts is not None:
                catalog["item_counts"] = self.item_counts.to(torch.int32)
            save_tensors(tmp / CATALOG, catalog)
            write_lines(tmp / ITEMS, (json.dumps({"id": i, "text": t}, ensure_ascii=False)
                                      for i, t in zip(self.item_ids, self.item_texts)), "\n")
            write_json(tmp / MANIFEST, {
                "format": FORMAT, "version": VERSION, "config": self.config.model_dump(mode="json"),
                "encoder": {"name": self.encoder.name, "dim": self.encoder.dim,
                            "fingerprint": list(self.encoder.fingerprint)},
                "codebook_sizes": list(self.codebook_sizes), "n_items": len(self.item_ids),
                "trained_items": self.trained_items,
                "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                          for name in (WEIGHTS, CATALOG, ITEMS)}})
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ModelFiles:
        path = Path(path)
        manifest = read_manifest(path)
        for name, expected in manifest["files"].items():
            file = path / name
            if not file.is_file():
                raise CorruptFileError(file, "file is missing from the model directory", "copy the whole directory")
            if file.stat().st_size != expected["bytes"] or sha256_file(file) != expected["sha256"]:
                raise CorruptFileError(file, f"size or sha256 differs from {MANIFEST} (truncated or modified)",
                                       "copy the directory again or re-export it from its run")
        try:
            config = load_config([], base=manifest["config"])
        except ConfigError as error:
            raise CorruptFileError(path / MANIFEST, f"config does not validate: {error}") from None
        catalog = load_tensors(path / CATALOG)
        rows = [json.loads(line) for line in (path / ITEMS).read_text(encoding="utf-8").splitlines()]
        codes, counts = catalog.get("codes"), catalog.get("item_counts")
        encoder = manifest["encoder"]
        return cls(config=config, weights=load_tensors(path / WEIGHTS),
                   item_vectors=catalog["item_vectors"].float(), codes=None if codes is None else codes.long(),
                   item_ids=[row["id"] for row in rows], item_texts=[row["text"] for row in rows],
                   encoder=EncoderSpec(encoder["name"], encoder["dim"], tuple(encoder["fingerprint"])),
                   codebook_sizes=manifest["codebook_sizes"], trained_items=manifest["trained_items"],
                   item_counts=None if counts is None else counts.long())


def read_manifest(path: Path) -> dict:
    """model.json, checked for format and version before anything else is read."""
    return read_versioned_json(path / MANIFEST, FORMAT, VERSION, f"not a dgi model directory (no {MANIFEST})",
                               "re-export the model with this version of dgi (`dgi export`)")


def is_model_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST).is_file()


def find_model_dir(path: str | os.PathLike[str]) -> Path | None:
    """`path` itself when it is a model directory, else the `model/` a run directory exported, else None."""
    for candidate in (Path(path), Path(path) / "model"):
        if is_model_dir(candidate):
            return candidate
    return None


def _code_dtype(codebook_sizes: Sequence[int]) -> torch.dtype:
    largest = max(codebook_sizes) - 1
    return torch.uint8 if largest <= 255 else torch.int16 if largest <= 32767 else torch.int32
