"""The healthcheck: healthy only while the worker loop keeps touching its heartbeat file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from common.service import Heartbeat
from common.stack.health import main


def test_a_fresh_heartbeat_is_healthy_a_stale_or_missing_one_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beat = tmp_path / "h" / "beat"
    assert main([str(beat)]) == 1
    assert "has not started its loop" in capsys.readouterr().err
    Heartbeat(beat).beat()
    assert main([str(beat), "--max-age", "5"]) == 0
    old = time.time() - 60
    os.utime(beat, (old, old))
    assert main([str(beat), "--max-age", "30"]) == 1
    assert "last turned 60 s ago" in capsys.readouterr().err


def test_the_heartbeat_touches_at_most_once_per_interval(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    heart = Heartbeat(beat, every_s=3600)
    heart.beat()
    old = time.time() - 100
    os.utime(beat, (old, old))
    heart.beat()  # within the interval: not touched again
    assert beat.stat().st_mtime == pytest.approx(old, abs=1)
