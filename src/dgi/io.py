"""Atomic file writes: a crash never leaves a half-written file behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file


class CorruptFileError(ValueError):
    """A file the project wrote is missing, truncated or not what its name says: named, with what to do."""

    def __init__(self, path: str | os.PathLike[str], problem: str, remedy: str = "") -> None:
        super().__init__(path, problem, remedy)
        self.path, self.problem, self.remedy = Path(path), problem, remedy

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" + (f"; {self.remedy}" if self.remedy else "")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; results are meant to be shared
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces `path` only if the block succeeds.

    Readers see the old directory or the new one, never a mix: the old one is renamed aside first
    and deleted after the new one is in place.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        aside = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(target, aside)
        os.replace(tmp, target)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_versioned_json(path: str | os.PathLike[str], format_name: str, version: int, missing: str,
                        remedy: str) -> dict[str, Any]:
    """A manifest JSON object, checked for its `format` and `version` before anything else is read;
    every problem is a CorruptFileError naming the file (`missing`: what its absence means)."""
    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(path, missing, remedy)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFileError(path, f"unreadable manifest ({error})", remedy) from None
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        raise CorruptFileError(path, f"not a {format_name} manifest")
    if manifest.get("version") != version:
        raise CorruptFileError(path, f"format version {manifest.get('version')!r}, this dgi reads version {version}",
                               remedy)
    return manifest


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_lines(path: str | os.PathLike[str], lines: Iterable[str], newline: str = "") -> None:
    """Each of `lines` followed by `newline`, streamed to a temporary file, fsynced, then renamed over `path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line)
            handle.write(newline)
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append one line; a log line is small enough that a single write is all-or-nothing."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=_json_default) + "\n")


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """safetensors (never pickle), written atomically."""
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=dict(metadata or {}))
        os.chmod(tmp, 0o666 & ~_umask())  # save_file recreates the file owner-only


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing, empty or truncated file is a CorruptFileError."""
    with _reading_safetensors(path):
        return load_file(str(path))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file, read from its header alone."""
    with _reading_safetensors(path), safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


@contextmanager
def _reading_safetensors(path: str | os.PathLike[str]) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise CorruptFileError(path, "file is missing") from None
    except (SafetensorError, OSError) as error:
        raise CorruptFileError(path, f"not a readable safetensors file ({error})",
                               "it was truncated or overwritten; restore it or rerun the step that wrote it") from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Numpy arrays in one compressed .npz file (benchmark outputs are committed), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
