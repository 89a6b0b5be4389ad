"""Each extra installs everything its engine needs: the engine runs with only the base install and that one extra
(and a fresh venv with only `.[torch]` runs `streamyolo detect` on a TrainYourOwnYOLO folder).

The check runs each engine in a fresh interpreter where every module outside the allowed distributions (the base
dependencies, the engine's extra, and what those require in turn, read from the installed packages' metadata)
fails to import, as it would in a venv holding nothing else. A module the engine needs but its extra lacks (h5py
was one: the torch engine reads TrainYourOwnYOLO's weights with it) fails the check; and when one is missing, the
detector's start-up check names the extra of the engine that was asked for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from common.plugins import ENGINES
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

DEMO = ROOT / "detector" / "models" / "shapes"
PROJECT = {"common", "ingest", "detector", "sink", "tests"}

# Runs in the child: blocks every import outside ALLOWED, then starts the engine as the detector would.
PROBE = r"""
import importlib.abc, importlib.metadata, json, sys
spec = json.loads(sys.argv[1])
allowed, project = set(spec["allowed"]), set(spec["project"])
owners = importlib.metadata.packages_distributions()

def canonical(name):
    return name.lower().replace("_", "-").replace(".", "-")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in sys.stdlib_module_names or top in project or top.startswith("_"):
            return None
        dists = {canonical(d) for d in owners.get(top, [])}
        if dists and not dists & allowed:
            raise ModuleNotFoundError(f"No module named {top!r} (not in this extra)", name=top)
        return None

sys.meta_path.insert(0, Block())
import numpy as np
from argparse import Namespace
from common.config import parse_config
from common.service import UsageError
from detector.__main__ import options
config = parse_config(spec["config"])
try:
    options(config, Namespace(pool="main", replica=None))
except UsageError as exc:
    print(json.dumps({"problems": exc.problems}))
    sys.exit(0)
from detector import worker  # everything the detector process imports at start
from detector.engines import create_engine
from detector.model import ModelSpec
pool = config.pool("main")
model = ModelSpec.from_config(pool.model)
engine = create_engine(pool.engine, model, 2)
heads = engine.predict(np.zeros((2, model.input_size, model.input_size, 3), np.uint8))
print(json.dumps({"heads": [list(h.shape) for h in heads], "device": engine.device}))
"""


def _dependencies(requirement: Requirement, extras: set[str]) -> set[str]:
    marker = requirement.marker
    if marker is None:
        return {canonicalize_name(requirement.name)}
    environments = [{"extra": e} for e in extras or {""}]
    return {canonicalize_name(requirement.name)} if any(marker.evaluate(env) for env in environments) else set()


@cache
def closure(roots: tuple[str, ...]) -> frozenset[str]:
    """The distributions ``roots`` (requirement strings) install, following the installed metadata."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (an optional platform package): nothing of it can be imported either
        for line in requires:
            sub = Requirement(line)
            if _dependencies(sub, set(req.extras)):
                todo.append(sub)
    return frozenset(seen)


def allowed(extra: str) -> frozenset[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return closure(tuple(project["dependencies"]) + tuple(project["optional-dependencies"][extra]))


def config(kind: str, tmp: Path) -> str:
    if kind == "onnx":
        from tests.unit.test_onnx_engine import CLASSES, tiny_yolov3

        model = f"{{onnx: {tiny_yolov3(tmp)}, classes: {list(CLASSES)}}}"
    else:
        model = f"{{folder: {DEMO}, input_size: 64}}"
    return f"detector: {{pools: [{{name: main, model: {model}, engine: {{kind: {kind}, gpu: null}}}}]}}"


def probe(kind: str, tmp: Path, deny: frozenset[str] = frozenset()) -> dict[str, object]:
    spec = {"allowed": sorted(allowed(kind) - deny), "project": sorted(PROJECT), "config": config(kind, tmp)}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [sys.executable, "-c", PROBE, json.dumps(spec)]
    done = subprocess.run(argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"the {kind} engine failed with only its extra:\n{done.stderr[-3000:]}"
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


NEEDS = {kind: settings.needs for kind, settings in ENGINES.kinds().items()}
"""What each engine declares it imports beyond the base install (``EngineSettings.needs``)."""


@pytest.mark.parametrize("kind", sorted(NEEDS))
def test_each_engine_runs_with_only_the_base_install_and_its_own_extra(kind: str, tmp_path: Path) -> None:
    result = probe(kind, tmp_path)
    assert "problems" not in result, result
    assert len(result["heads"]) == 2  # type: ignore[arg-type]  # the tiny demo network's two heads
    assert result["device"] == "cpu"


def test_every_module_an_engine_needs_is_in_its_extra() -> None:
    for kind, modules in NEEDS.items():
        for module in modules:
            owners = {canonicalize_name(d) for d in metadata.packages_distributions().get(module, [])}
            assert owners & allowed(kind), f"{module} (from {owners}) is not installed by the {kind} extra"


def test_the_block_is_real_a_missing_package_fails_and_names_the_engines_extra(tmp_path: Path) -> None:
    # Without h5py (as the torch extra was before it listed it), the detector refuses to start and names the
    # torch extra, not TensorFlow's.
    result = probe("torch", tmp_path, deny=frozenset({"h5py"}))
    assert result == {
        "problems": [
            "detector.pools[main].engine: the torch engine needs the torch extra: pip install 'streamyolo[torch]' "
            "(missing: h5py)"
        ]
    }
    assert "tensorflow-cpu" not in allowed("torch") and "torch" not in allowed("tensorflow")


def test_pip_install_of_the_torch_extra_alone_runs_a_trainyourownyolo_folder(tmp_path: Path) -> None:
    """A fresh venv with only ``torch`` and ``.[torch]``: no TensorFlow, and ``streamyolo detect`` answers every
    image of a folder with the bundled TrainYourOwnYOLO model on the torch engine."""
    import cv2
    import torch

    from ingest.sources.synthetic import SyntheticSource, SyntheticSourceConfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir"]
    # The torch this suite runs with (from the local wheel, not a CUDA build off the index), then the project.
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    source = tmp_path / "streamyolo"  # a copy: building in the checkout would leave build/ there
    for part in ("common", "ingest", "detector", "sink"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    install = [*pip, torch_pin, f"{source}[torch]"]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import tensorflow"], capture_output=True, check=False).returncode != 0
    images = tmp_path / "Test_Images"
    images.mkdir()
    camera = SyntheticSource(SyntheticSourceConfig(seed=5, width=320, height=240, distractors=1))
    for i in range(4):
        cv2.imwrite(str(images / f"{i}.jpg"), camera.render(i * 10))
    weights = DEMO / "trained_weights_final.h5"
    command = [str(venv / "bin" / "streamyolo"), "detect", "--input_path", str(images),
               "--output", str(tmp_path / "out"), "--yolo_model", str(weights),
               "--anchors", str(DEMO / "yolo-tiny_anchors.txt"), "--classes", str(DEMO / "data_classes.txt"),
               "--input_size", "256"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    ran = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert ran.returncode == 0, ran.stderr[-4000:]
    assert "torch engine ready" in ran.stderr
    rows = (tmp_path / "out" / "Detection_Results.csv").read_text(encoding="utf-8").splitlines()
    assert {row.split(",")[0] for row in rows[1:]} == {f"{i}.jpg" for i in range(4)}  # every image has boxes
