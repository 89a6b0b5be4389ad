"""Progress bars for the cameras that read a finite source (video files, image folders): frames read of the total,
on stderr, when it is a terminal (or when asked)."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ingest.publisher import Publisher
from ingest.reader import CameraReader


class FileProgress:
    """One bar per camera whose source knows its length; ``update`` is called from the ingest loop."""

    def __init__(self, publisher: Publisher, console: Console | None = None) -> None:
        self.publisher = publisher
        self._bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
            TimeRemainingColumn(), console=console or Console(stderr=True), refresh_per_second=4,
        )  # fmt: skip
        self._tasks: dict[str, TaskID] = {}
        self._bars.start()

    def update(self, readers: Mapping[str, CameraReader]) -> None:
        for name, reader in readers.items():
            if reader.total is None:
                continue
            if name not in self._tasks:
                self._tasks[name] = self._bars.add_task(f"camera {name}", total=reader.total)
            self._bars.update(self._tasks[name], completed=min(self.publisher.counter(name).read, reader.total))

    def close(self, readers: Mapping[str, CameraReader]) -> None:
        self.update(readers)
        self._bars.stop()
