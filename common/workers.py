"""A background worker: one named daemon thread whose stop, deadline-bound join and failure are its owner's.

Hand-rolled threads each re-invented their stop flag and join, and an exception that killed one went to
``threading.excepthook`` (stderr) while the owner waited on a thread that would never deliver. Here the exception
is logged once, kept, and raised to the owner by :meth:`Worker.check` and :meth:`Worker.join`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Self

log = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """A worker's thread died of an exception (its ``__cause__``)."""


class Worker:
    """Runs ``target`` on a named daemon thread; ``target`` should return soon after ``stopping`` is set.

    ``on_error`` runs on the worker's thread after a failure was recorded: the place to wake an owner blocked on
    the worker (a queue it reads), who then finds the error with :meth:`check`.
    """

    def __init__(
        self,
        name: str,
        target: Callable[[], object],
        *,
        stopping: threading.Event | None = None,
        on_error: Callable[[BaseException], object] | None = None,
        daemon: bool = True,
    ) -> None:
        self.name = name
        self.stopping = stopping if stopping is not None else threading.Event()
        """Set by :meth:`stop` (or by whoever shares the event): the target's cue to return."""
        self._target = target
        self._on_error = on_error
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=daemon)

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # kept for the owner, never lost on stderr
            self._error = exc
            log.error("%s thread failed: %s: %s", self.name, type(exc).__name__, exc, exc_info=exc)
            if self._on_error is not None:
                self._on_error(exc)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the target to return (sets ``stopping``); does not wait: see :meth:`join`."""
        self.stopping.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """What killed the thread, if anything did."""
        return self._error

    def check(self) -> None:
        """Raise :class:`WorkerError` (from the original) if the thread died of an exception."""
        if self._error is not None:
            raise WorkerError(f"{self.name} failed: {self._error}") from self._error

    def join(self, deadline_s: float) -> bool:
        """Wait up to ``deadline_s`` seconds for the thread to end; True when it did (or never started).

        Raises :class:`WorkerError` if it ended by an exception, so a failure is not mistaken for a clean stop.
        """
        if self._thread.ident is not None:
            self._thread.join(max(0.0, deadline_s))
        self.check()
        return not self._thread.is_alive()
