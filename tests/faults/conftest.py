"""The fault suite's figures (recovery times, ledgers): printed after the run, and written as JSON to the file
``STREAMYOLO_FAULTS_REPORT`` names (bench/results/faults.json holds a committed run)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIGURES: dict[str, dict[str, Any]] = {}

Record = Callable[..., None]


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Record:
    """record(name=value, ...) files figures under the test's name."""

    def add(**values: Any) -> None:
        FIGURES.setdefault(request.node.name, {}).update(values)

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("fault suite figures")
    for case, values in FIGURES.items():
        terminalreporter.write_line(f"{case}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    target = os.environ.get("STREAMYOLO_FAULTS_REPORT")
    if target:
        machine = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()}
        report = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine, "cases": FIGURES}
        Path(target).write_text(json.dumps(report, indent=1) + "\n")
