"""Guards on the project itself: the README's commands, CI, and which processes may load a framework."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

from tests.conftest import ROOT


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line for line in readme[:8] if line.startswith("python3 -m venv")]
    assert len(commands) == 2, "the README starts with exactly two set-up commands"
    assert "streamyolo --config" in commands[0]
    assert commands[1] in (ROOT / ".ci/run").read_text().splitlines()
    assert "pytest" in commands[1] and "ruff check" in commands[1] and "mypy" in commands[1]


def test_the_base_install_never_pulls_a_framework() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert "tensorflow" not in base and "torch" not in base and "keras" not in base and "onnx" not in base
    assert "opencv-python-headless" in base


FRAMEWORKS = ("tensorflow", "keras", "torch", "onnxruntime")
DRIVERS = ("psycopg", "paho", "httpx", "starlette", "uvicorn", "av", "scipy")  # scipy: the tracker's assignment


def loaded_after(code: str, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    found: list[str] = json.loads(out.stdout)
    return found


def test_ingest_sinks_and_the_detector_loop_never_import_a_framework() -> None:
    code = (
        "import ingest.worker, ingest.__main__, sink.runner, sink.stores._runner, sink.alerts.runner, sink.__main__, "
        "sink.tracker.runner, sink.mqtt.runner, detector.worker, detector.pipeline, detector.__main__, "
        "common.stack.launcher"
    )
    assert loaded_after(code, FRAMEWORKS) == []


def test_discovering_every_plug_in_loads_no_framework_or_driver() -> None:
    """Every process imports every plug-in module (the config's unions are built from them): each keeps its
    framework (TensorFlow, torch, onnxruntime) and its driver (psycopg, paho, httpx, the web server) for when it
    runs."""
    code = (
        "import common.config\n"
        "from common import plugins\n"
        "for family in (plugins.SOURCES, plugins.ENGINES, plugins.STORES, plugins.ACTIONS, plugins.SINKS):\n"
        "    assert family.kinds(), family.name"
    )
    assert loaded_after(code, FRAMEWORKS + DRIVERS) == []
