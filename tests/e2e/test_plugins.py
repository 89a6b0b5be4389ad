"""A new plug-in is one new file: a trivial camera source and a trivial result store, each written as one file into
a copy of the project, are taken by the config (the unions are built from the registries) and run by the real
services (``python -m ingest``, ``python -m sink``) against a real server. The project itself does not know them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest
import yaml

from common.codec import decode_frame
from common.config import ConfigError, parse_config
from common.keys import Keys
from common.redis_io import Client
from common.wire import FIELD, Frame, Result, Timings, decode, encode
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

COUNTER_SOURCE = '''"""A trivial source: a few grey frames, each brighter than the last."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from common.plugins import SOURCES
from common.settings import SourceSettings


class CounterSourceConfig(SourceSettings):
    kind: Literal["counter"] = "counter"
    frames: int = Field(3, ge=1, le=25, description="Frames before the source ends.")


class CounterSource:
    live = False
    fps: float | None = 10.0

    def __init__(self, cfg: CounterSourceConfig, decoder_threads: int) -> None:
        self.cfg, self.index, self.total = cfg, -1, cfg.frames

    def grab(self) -> float | None:
        self.index += 1
        return None if self.index >= self.cfg.frames else self.index / 10

    def retrieve(self) -> np.ndarray:
        return np.full((48, 64, 3), 10 * (self.index + 1), np.uint8)

    def origin(self) -> tuple[str, int | None] | None:
        return None

    def close(self) -> None:
        pass


SOURCES.register(CounterSourceConfig, CounterSource)
'''

LINES_STORE = '''"""A trivial store: one line per result, "stream seq"."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast
from typing import Literal

from pydantic import Field

from common.plugins import STORES
from common.settings import ConfigPath, StoreSettings
from common.wire import Result


class LinesSinkConfig(StoreSettings):
    kind: Literal["lines"] = "lines"
    path: ConfigPath = Field(description="File the lines are appended to.")


class LinesStore:
    def __init__(self, cfg: LinesSinkConfig) -> None:
        self.path = Path(cfg.path)

    def write(self, results: Sequence[Result]) -> int:
        with self.path.open("a") as f:
            f.writelines(f"{r.stream} {r.seq}\\n" for r in results)
        return len(results)

    def close(self) -> None:
        pass


STORES.register(LinesSinkConfig, LinesStore)
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's packages with the two plug-in files added, and nothing else changed."""
    dest = tmp_path_factory.mktemp("project")
    for name in ("common", "ingest", "detector", "sink"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "models"))
    (dest / "ingest/sources/counter.py").write_text(COUNTER_SOURCE)
    (dest / "sink/stores/lines.py").write_text(LINES_STORE)
    return dest


def run(project: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(project)}  # the copy, ahead of the installed checkout
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stderr


def write(tmp: Path, server_url: str, prefix: str, **sections: object) -> Path:
    path = tmp / "stack.yaml"
    path.write_text(yaml.safe_dump({"redis": {"url": server_url}, "streams": {"prefix": prefix}, **sections}))
    return path


def test_the_project_itself_knows_neither_kind() -> None:
    with pytest.raises(ConfigError, match="'counter'"):
        parse_config("ingest: {cameras: [{name: c, source: {kind: counter}}]}\n")
    with pytest.raises(ConfigError, match="'lines'"):
        parse_config("sinks: [{kind: lines, name: l, path: out.txt}]\n")


def test_a_source_added_as_one_file_publishes_frames(
    project: Path, tmp_path: Path, server_url: str, client: Client, prefix: str
) -> None:
    camera = {"name": "c1", "source": {"kind": "counter", "frames": 3}, "encoding": "png"}
    config = write(tmp_path, server_url, prefix, ingest={"cameras": [camera]})
    run(project, "ingest", "--config", str(config), "--duration", "60")
    entries = client.xrange(Keys(prefix).frames("c1"))
    frames = [decode(cast(bytes, fields[FIELD.encode()]), Frame) for _, fields in entries]
    assert [f.seq for f in frames] == [0, 1, 2]
    assert [int(decode_frame(f).mean()) for f in frames] == [10, 20, 30]  # lossless: exactly what the source made


def test_a_store_added_as_one_file_keeps_results(
    project: Path, tmp_path: Path, server_url: str, client: Client, prefix: str
) -> None:
    for seq in range(3):
        result = Result(
            frame_id=f"{seq + 1}-0", stream="c1", seq=seq, capture_ts=time.time(), width=64, height=48, pool="main",
            replica="r0", engine="torch", device="cpu", batch_size=1, published_ts=time.time(),
            timings=Timings(queue_ms=1, decode_ms=1, inference_ms=1, postprocess_ms=1, end_to_end_ms=4), detections=[],
        )  # fmt: skip
        client.xadd(Keys(prefix).results("c1"), {FIELD: encode(result)})
    sink = {"kind": "lines", "name": "lines", "path": "out.txt", "block_ms": 300}
    config = write(tmp_path, server_url, prefix, sinks=[sink])
    log = run(project, "sink", "--config", str(config), "--until-idle", "2", "--duration", "60")
    assert "sink lines (lines)" in log
    assert (tmp_path / "out.txt").read_text().splitlines() == ["c1 0", "c1 1", "c1 2"]
