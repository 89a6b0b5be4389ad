"""What a benchmark ran on, for its JSON: the same fields from every CPU benchmark."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import cv2


def cpu_machine(**versions: str) -> dict[str, Any]:
    """Platform, CPU model and count, Python and OpenCV, plus the given library versions."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        **versions,
    }


def write_report(out: Path, report: dict[str, Any], started: float) -> None:
    """``report`` with the bench's wall time (since ``started``, monotonic) as JSON at ``out``, and say where."""
    report["bench_wall_s"] = round(time.monotonic() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out} ({report['bench_wall_s']} s)")
