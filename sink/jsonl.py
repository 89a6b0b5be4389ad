"""The JSONL sink: one JSON object a line, appended and flushed before the results are acked."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from common.config import JsonlSinkConfig
from common.wire import Result


class JsonlStore:
    def __init__(self, cfg: JsonlSinkConfig) -> None:
        self.path = Path(cfg.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, results: Sequence[Result]) -> None:
        self._file.writelines(json.dumps(r.model_dump(mode="json"), separators=(",", ":")) + "\n" for r in results)
        self._file.flush()
        os.fsync(self._file.fileno())  # acked means on disk

    def close(self) -> None:
        self._file.close()
