"""Record types shared by loaders, generators, training and evaluation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Item:
    """One retrievable item; `fields` keeps any extra keys so no catalog data is lost."""

    id: str
    text: str
    embedding: tuple[float, ...] | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    """One query/history -> target pair; `history` is oldest first, like the files.

    `relevant` (item id -> relevance > 0) lists every relevant item for evaluation, since
    search benchmarks judge several documents per query; `target`, which it must contain,
    stays the single item the model is trained toward.
    """

    target: str
    history: tuple[str, ...] = ()
    query: str | None = None
    timestamp: float | None = None
    id: str = ""
    relevant: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.relevant is not None and self.target not in self.relevant:
            raise ValueError(f"example {self.id!r}: target {self.target!r} is not in relevant")


class DataError(ValueError):
    """Invalid dataset content, located precisely so users can fix the file.

    `line` is 1-based (0 when the problem concerns the whole file) and `field`
    is None when the problem is not tied to one field (e.g. invalid JSON).
    """

    def __init__(
        self, path: str | os.PathLike[str], line: int, field: str | None, message: str
    ) -> None:
        # Passing every argument to ValueError keeps the exception picklable.
        super().__init__(path, line, field, message)
        self.path = path
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = f"{os.fspath(self.path)}:{self.line}" if self.line else os.fspath(self.path)
        if self.field is None:
            return f"{where}: {self.message}"
        return f"{where}: field '{self.field}': {self.message}"
