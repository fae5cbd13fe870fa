"""An append-only journal of catalogue changes: an acknowledged add or delete survives kill -9.

Each change is one JSON line, flushed and fsynced before the server answers. At start the journal is
replayed over the model directory's catalogue; a last line torn by a crash mid-write (never
acknowledged) is skipped with a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ItemJournal:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record in order; a torn or unreadable line is reported and skipped."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    record = json.loads(raw.decode("utf-8"))
                    if not isinstance(record, dict) or record.get("op") not in ("add", "delete"):
                        raise ValueError("not a journal record")
                except ValueError:  # JSONDecodeError and UnicodeDecodeError included
                    warnings.warn(f"{self.path}:{number}: unreadable journal line skipped "
                                  "(a write cut short by a crash; it was never acknowledged)", stacklevel=2)
                    continue
                yield record
