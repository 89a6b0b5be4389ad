"""The background worker: named daemon thread, stop, join within a deadline, and failures the owner gets."""

from __future__ import annotations

import logging
import threading

import pytest

from common.workers import Worker, WorkerError


def test_a_worker_runs_on_a_named_daemon_thread_until_stopped() -> None:
    seen: list[tuple[str, bool]] = []

    def loop() -> None:
        seen.append((threading.current_thread().name, threading.current_thread().daemon))
        worker.stopping.wait(10)

    worker = Worker("ticker", loop)
    worker.start()  # after the assignment: loop reads ``worker``
    assert worker.alive
    worker.stop()
    assert worker.join(5.0) is True
    assert seen == [("ticker", True)] and not worker.alive and worker.error is None
    worker.check()  # a clean stop raises nothing


def test_join_with_a_deadline_returns_false_for_a_stuck_worker() -> None:
    release = threading.Event()
    worker = Worker("stuck", lambda: release.wait(30)).start()  # ignores its stop
    worker.stop()
    assert worker.join(0.1) is False and worker.alive
    release.set()
    assert worker.join(5.0) is True


def test_a_crash_is_logged_once_and_surfaces_to_the_owner(caplog: pytest.LogCaptureFixture) -> None:
    woken: list[BaseException] = []

    def crash() -> None:
        raise ConnectionError("the server went away")

    with caplog.at_level(logging.ERROR, logger="common.workers"):
        worker = Worker("reader", crash, on_error=woken.append).start()
        with pytest.raises(WorkerError, match="reader failed: the server went away") as err:
            worker.join(5.0)
    assert isinstance(err.value.__cause__, ConnectionError) and woken == [err.value.__cause__]
    with pytest.raises(WorkerError):
        worker.check()  # kept: asked again, raised again
    assert isinstance(worker.error, ConnectionError)
    assert caplog.text.count("reader thread failed: ConnectionError: the server went away") == 1


def test_a_shared_stop_event_stops_the_worker() -> None:
    stop = threading.Event()
    worker = Worker("shared", lambda: stop.wait(10), stopping=stop).start()
    stop.set()
    assert worker.join(5.0) and worker.stopping is stop


def test_join_of_a_worker_never_started_is_immediate() -> None:
    assert Worker("idle", lambda: None).join(0.0) is True
