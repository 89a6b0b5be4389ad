"""The JSONL store: one JSON object a line, appended and fsynced before the results are acked.

Storing is idempotent on (stream, frame_id): the keys already in the file are read at start, and results already
there are skipped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from common.plugins import STORES
from common.settings import ConfigPath, StoreSettings
from common.wire import Result
from sink.stores.base import StoreError

log = logging.getLogger(__name__)


class JsonlSinkConfig(StoreSettings):
    """Results appended to a file, one JSON object a line."""

    kind: Literal["jsonl"] = "jsonl"
    path: ConfigPath = Field(description="File the results are appended to, one JSON object a line.")


class JsonlStore:
    """Results appended to one file; see the module docstring."""

    def __init__(self, cfg: JsonlSinkConfig) -> None:
        self.path = Path(cfg.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen = self._read_keys() if self.path.exists() else set()
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, results: Sequence[Result]) -> int:
        """Append the results not stored yet; returns how many that was."""
        lines = []
        for r in results:
            key = (r.stream, r.frame_id)
            if key not in self._seen:
                self._seen.add(key)
                lines.append(json.dumps(r.model_dump(mode="json"), separators=(",", ":")) + "\n")
        if lines:
            self._file.writelines(lines)
            self._file.flush()
            os.fsync(self._file.fileno())  # acked means on disk
        return len(lines)

    def close(self) -> None:
        self._file.close()

    def _read_keys(self) -> set[tuple[str, str]]:
        """The (stream, frame_id) of every line; a last line cut short by a crash is cut off the file."""
        seen: set[tuple[str, str]] = set()
        complete = 0  # bytes up to the end of the last whole line
        number = 0
        with self.path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    break
                seen.add(self._key(line, number))
                complete += len(line)
            else:
                return seen
        # The line was being written when the process died: its batch was never acked and will come again, and
        # appending after it would glue the next result onto it.
        log.warning(
            "%s: line %d is cut short (the sink stopped while writing it); removing it, its results will be stored "
            "again when redelivered",
            self.path,
            number,
        )
        os.truncate(self.path, complete)
        return seen

    def _key(self, line: bytes, number: int) -> tuple[str, str]:
        try:
            body = json.loads(line)
            return str(body["stream"]), str(body["frame_id"])
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(
                f"{self.path}:{number}: not a result line ({exc!r}); this file is not a streamyolo JSONL store, or was "
                f"edited: fix or remove the line, or point the sink at another path"
            ) from None


STORES.register(JsonlSinkConfig, JsonlStore)
