"""Guards on the project itself: the README's commands, CI, and which processes may load a framework."""

from __future__ import annotations

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


def test_ingest_sinks_and_the_detector_loop_never_import_a_framework() -> None:
    code = (
        "import sys, ingest.worker, ingest.__main__, sink.runner, sink.stores._runner, sink.alerts.runner, "
        "sink.__main__, detector.worker, "
        "detector.pipeline, detector.__main__, common.stack.launcher\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_discovering_every_plug_in_loads_no_framework_or_driver() -> None:
    """Every process imports every plug-in module (the config's unions are built from them): each keeps its
    framework (TensorFlow, torch, onnxruntime) and its driver (psycopg, paho, httpx, the web server) for when it
    runs."""
    code = (
        "import sys, common.config\n"
        "from common import plugins\n"
        "for family in (plugins.SOURCES, plugins.ENGINES, plugins.STORES, plugins.ACTIONS, plugins.SINKS):\n"
        "    assert family.kinds(), family.name\n"
        "heavy = ('tensorflow', 'keras', 'torch', 'onnxruntime', 'psycopg', 'paho', 'httpx', 'starlette', 'uvicorn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
