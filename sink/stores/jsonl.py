"""The JSONL store: one JSON object a line (a result, or a tracker's event), appended and fsynced before the messages
are acked.

Storing is idempotent, on (stream, frame_id) for results and on ``event_id`` for events: the keys already in the file
are read at start, and messages already there are skipped. A file holds one kind: that of the sink's ``events_of``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from common.plugins import STORES
from common.settings import ConfigPath, StoreSettings
from common.wire import Event, Result
from sink.stores.base import StoreError

log = logging.getLogger(__name__)

Key = tuple[str, ...]


class JsonlSinkConfig(StoreSettings):
    """Results (or a tracker's events) appended to a file, one JSON object a line."""

    keeps_events: ClassVar[bool] = True
    kind: Literal["jsonl"] = "jsonl"
    path: ConfigPath = Field(description="File the results (or events) are appended to, one JSON object a line.")


class JsonlStore:
    """Results, or events, appended to one file; see the module docstring."""

    def __init__(self, cfg: JsonlSinkConfig) -> None:
        self.path = Path(cfg.path)
        self.events = cfg.events_of is not None
        self._what = "event" if self.events else "result"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen = self._read_keys() if self.path.exists() else set()
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, results: Sequence[Result]) -> int:
        """Append the results not stored yet; returns how many that was."""
        self._check(events=False)
        return self._append([((r.stream, r.frame_id), r) for r in results])

    def write_events(self, events: Sequence[Event]) -> int:
        """Append the events not stored yet; returns how many that was."""
        self._check(events=True)
        return self._append([((e.event_id,), e) for e in events])

    def close(self) -> None:
        self._file.close()

    def _check(self, *, events: bool) -> None:
        if events != self.events:  # one kind a file: a reader must be able to tell every line's schema
            raise StoreError(f"{self.path}: this store keeps {self._what}s, not {'events' if events else 'results'}")

    def _append(self, keyed: Sequence[tuple[Key, BaseModel]]) -> int:
        lines = []
        for key, message in keyed:
            if key not in self._seen:
                self._seen.add(key)
                lines.append(json.dumps(message.model_dump(mode="json"), separators=(",", ":")) + "\n")
        if lines:
            self._file.writelines(lines)
            self._file.flush()
            os.fsync(self._file.fileno())  # acked means on disk
        return len(lines)

    def _read_keys(self) -> set[Key]:
        """The key of every line; a last line cut short by a crash is cut off the file."""
        seen: set[Key] = set()
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
        # appending after it would glue the next message onto it.
        log.warning(
            "%s: line %d is cut short (the sink stopped while writing it); removing it, its %ss will be stored "
            "again when redelivered",
            self.path,
            number,
            self._what,
        )
        os.truncate(self.path, complete)
        return seen

    def _key(self, line: bytes, number: int) -> Key:
        try:
            body = json.loads(line)
            if self.events:
                return (str(body["event_id"]),)
            if "event_id" in body:  # an event has a stream and a frame id too: without this it would pass
                raise ValueError("an event line")
            return str(body["stream"]), str(body["frame_id"])
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(
                f"{self.path}:{number}: not {'an event' if self.events else 'a result'} line ({exc!r}); this file is "
                f"not a streamyolo JSONL store of {self._what}s, or was edited: fix or remove the line, or point the "
                f"sink at another path"
            ) from None


STORES.register(JsonlSinkConfig, JsonlStore)
