"""Two detector replicas of one pool share the frames; one is killed mid-run and nothing is lost."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import connect
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]


def start(name: str, config: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", name, "--config", str(config), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def victim_answered(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(json.loads(line)["replica"] == "main-1" for line in path.read_text().splitlines() if line.strip())


def test_a_replica_killed_mid_run_loses_no_frame(tmp_path: Path) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text(textwrap.dedent(f"""\
        streams: {{prefix: rep, frames_maxlen: 5000}}
        ingest:
          cameras:
            - {{name: a, source: {{kind: synthetic, seed: 1, width: 320, height: 240, fps: 10}}}}
            - {{name: b, source: {{kind: synthetic, seed: 2, width: 320, height: 240, fps: 10}}}}
            - {{name: c, source: {{kind: synthetic, seed: 3, width: 320, height: 240, fps: 10}}}}
        detector:
          pools:
            - name: main
              model: {{architecture: tiny, classes: [circle, square, triangle], input_size: 128}}
              max_batch: 4
              max_wait_ms: 30
              max_age_ms: null
              block_ms: 300
              claim_idle_ms: 1500
              rescan_s: 0.5
        sinks:
          - {{kind: jsonl, name: out, path: {tmp_path}/results.jsonl, block_ms: 300, rescan_s: 0.5}}
        """))  # fmt: skip
    keys = Keys("rep")
    with EmbeddedServer(tmp_path / "r.sock") as server:
        survivor = start("detector", config, server.url, "--replica", "main-0", "--until-idle", "6")
        victim = start("detector", config, server.url, "--replica", "main-1")
        sink = start("sink", config, server.url, "--until-idle", "12")
        ingest = start("ingest", config, server.url, "--duration", "12")
        client = connect(server.url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and victim_answered(tmp_path / "results.jsonl") < 5:
            time.sleep(0.2)
        answered_before_kill = victim_answered(tmp_path / "results.jsonl")
        os.kill(victim.pid, signal.SIGKILL)  # mid-run, with frames read and not yet answered
        victim_log, _ = victim.communicate(timeout=30)
        ingest_log, _ = ingest.communicate(timeout=60)
        survivor_log, _ = survivor.communicate(timeout=120)
        sink_log, _ = sink.communicate(timeout=120)
        assert ingest.returncode == survivor.returncode == sink.returncode == 0, survivor_log + sink_log
        for stream in "abc":
            assert client.xpending(keys.frames(stream), keys.detector_group("main"))["pending"] == 0
        client.close()

    assert answered_before_kill >= 5, f"the victim was not working when killed:\n{victim_log}"
    published = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"camera (\w): read \d+, sampled \d+, published (\d+)", ingest_log)
    }
    assert set(published) == set("abc") and all(n > 50 for n in published.values()), ingest_log
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    per_frame = Counter((r["stream"], r["seq"]) for r in results)
    expected = {(s, i) for s, n in published.items() for i in range(n)}
    assert set(per_frame) == expected, f"lost: {sorted(expected - set(per_frame))[:10]}"
    duplicates = sum(n - 1 for n in per_frame.values())
    claimed = int(re.findall(r"claimed=(\d+)", survivor_log)[-1])
    assert duplicates <= claimed, f"{duplicates} duplicates, only {claimed} counted re-deliveries"
    assert {r["replica"] for r in results} == {"main-0", "main-1"}
