"""What a benchmark ran on, for its JSON: the same fields from every CPU benchmark."""

from __future__ import annotations

import os
import platform
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
