"""The run directory: everything needed to resume training or serve a trained model.

    config.yaml           resolved configuration
    run.json              dataset path, text encoder, codebook sizes, text dimension
    model.safetensors     best weights (selected on validation)
    last.safetensors      latest weights + optimizer + RNG + training state (one atomic file), for --resume
    state.json            training progress (epoch, step, best so far): a readable copy of the checkpoint's
    sid_index.safetensors SID table of the best model (absent for a dense-only dual encoder)
    log.jsonl             one line per epoch: every loss term, gamma, tau, code usage, collisions, validation
    model/                the best checkpoint as a self-contained model directory (dgi.model_dir), written
                          when training ends: what search and serving load
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dgi.config import Config, dump_config, load_config
from dgi.io import CorruptFileError, load_tensors, read_metadata, save_tensors, write_json, write_text
from dgi.nets.model import DGIModel


@dataclass
class RunDirectory:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    config_file = property(lambda self: self.path / "config.yaml")
    info_file = property(lambda self: self.path / "run.json")
    best_file = property(lambda self: self.path / "model.safetensors")
    last_file = property(lambda self: self.path / "last.safetensors")
    state_file = property(lambda self: self.path / "state.json")
    index_file = property(lambda self: self.path / "sid_index.safetensors")
    log_file = property(lambda self: self.path / "log.jsonl")
    model_dir = property(lambda self: self.path / "model")

    def exists(self) -> bool:
        return self.config_file.exists() and self.info_file.exists()

    def create(self, config: Config, info: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.config_file, dump_config(config))
        write_json(self.info_file, info)

    def config(self) -> Config:
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a dgi run directory (no config.yaml / run.json)")
        if not self.config_file.read_text(encoding="utf-8", errors="replace").strip():
            raise CorruptFileError(self.config_file, "empty run config", "restore it from a copy of the run")
        return load_config([self.config_file])

    def info(self) -> dict[str, Any]:
        return _read_json(self.info_file)

    def state(self) -> dict[str, Any] | None:
        """Training progress as of the last checkpoint (state.json, its readable copy)."""
        return _read_json(self.state_file) if self.state_file.exists() else None

    def save_checkpoint(self, model: DGIModel, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """One atomic file holds weights, optimizer, RNG and the training state, so a crash at any
        moment leaves the previous checkpoint or this one, never weights of one epoch with the
        counters of another. state.json is a readable copy, written after."""
        self.save_weights(self.last_file, model, tensors, metadata={"state": json.dumps(state)})
        write_json(self.state_file, state)

    def load_checkpoint(self, model: DGIModel) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Weights into `model`; returns the other tensors and the state saved with them."""
        if not self.last_file.exists():
            raise FileNotFoundError(f"{self.path} has no checkpoint to resume from ({self.last_file.name})")
        metadata = read_metadata(self.last_file)
        if "state" in metadata:
            state = json.loads(metadata["state"])
        elif (state := self.state()) is None:  # checkpoints of older versions kept it in state.json alone
            raise CorruptFileError(self.last_file, "checkpoint has no training state and state.json is missing",
                                   "start a new run")
        return self.load_weights(self.last_file, model), state

    def save_weights(self, path: Path, model: torch.nn.Module, extra: dict[str, torch.Tensor] | None = None,
                     metadata: dict[str, str] | None = None) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update(extra or {})
        save_tensors(path, {name: tensor.detach().cpu() for name, tensor in tensors.items()}, metadata)

    @staticmethod
    def load_weights(path: Path, model: DGIModel) -> dict[str, torch.Tensor]:
        """Load model weights in place; return the remaining (non-model) tensors."""
        tensors = load_tensors(path)
        model.load_weights({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        return {k: v for k, v in tensors.items() if not k.startswith("model.")}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptFileError(path, "file is missing from the run directory") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFileError(path, f"not valid JSON ({error})", "it was truncated or overwritten") from None
    if not isinstance(value, dict):
        raise CorruptFileError(path, f"expected a JSON object, got {type(value).__name__}")
    return value
