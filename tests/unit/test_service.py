from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from common.service import Bounds, Shutdown, UsageError, choose
from tests.conftest import ROOT


def test_bounds_stop_on_count_duration_and_idleness() -> None:
    assert Bounds().reached() is None
    b = Bounds(max_frames=3)
    b.count(2)
    assert b.reached() is None
    b.count(1)
    assert b.reached() == "max-frames 3 reached"
    assert Bounds(duration_s=0.0).reached() == "duration 0 s reached"
    idle = Bounds(until_idle_s=0.05)
    idle.count(1)
    assert idle.reached() is None
    time.sleep(0.06)
    assert idle.reached() == "idle for 0.05 s"


def test_choose_picks_the_only_one_or_the_named_one() -> None:
    assert choose(["a"], None, "sinks", "--sink") == "a"
    assert choose(["a", "b"], "b", "sinks", "--sink") == "b"
    for names, chosen, problem in (
        (["a", "b"], None, "sinks has several (a, b): choose one with --sink"),
        (["a"], "z", "--sink z: not in sinks (a)"),
        ([], None, "sinks is empty: configure at least one"),
    ):
        with pytest.raises(UsageError) as refused:
            choose(names, chosen, "sinks", "--sink")
        assert refused.value.problems == [problem]


def test_shutdown_request_is_seen_by_waiters() -> None:
    s = Shutdown()
    assert not s.is_set()
    s.request()
    assert s.is_set() and s.wait(0)


PROGRAM = textwrap.dedent(
    """
    import sys, time
    from common.service import Shutdown
    s = Shutdown(drain_s={drain}).install()
    print("ready", flush=True)
    s.wait(30)
    print("draining", flush=True)
    time.sleep({work})
    print("drained", flush=True)
    """
)


def spawn(drain: float, work: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM.format(drain=drain, work=work)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_first_signal_drains_second_exits_at_once() -> None:
    proc = spawn(drain=30, work=0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out == "draining\ndrained\n"

    proc = spawn(drain=30, work=20)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.stdout is not None and proc.stdout.readline() == "draining\n"
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=10) == 128 + signal.SIGINT
    proc.stdout.close()


def test_a_drain_past_its_deadline_is_cut_short() -> None:
    proc = spawn(drain=0.5, work=20)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "drained" not in out
