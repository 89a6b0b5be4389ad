"""Operability on real processes: every service's Prometheus metrics scraped mid-run, the status table, JSON logs,
and ingest's progress bars for file cameras."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.embedded import EmbeddedServer
from tests.conftest import ROOT, free_port
from tests.faults.stack import camera, processes, wait_for, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics page: (name, labels) -> value."""
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}  # fmt: skip


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_status_and_json_logs_of_a_running_stack(tmp_path: Path) -> None:
    cams = [camera("a", 1, 8), camera("b", 2, 8)]
    store = {"kind": "jsonl", "name": "out", "path": str(tmp_path / "results.jsonl")}
    config = write_config(tmp_path / "stack.yaml", "ops", cams, {}, [store])
    ports = {name: free_port() for name in ("ingest", "detector", "sink")}
    with EmbeddedServer(tmp_path / "r.sock") as server, processes(tmp_path, config, server.url) as procs:
        procs.start("detector", "detector", "--replica", "main-0", "--until-idle", "6", "--log-format", "json",
                    "--metrics-port", str(ports["detector"]))  # fmt: skip
        procs.start("sink", "sink", "--until-idle", "8", "--metrics-port", str(ports["sink"]))
        procs.start("ingest", "ingest", "--duration", "14", "--metrics-port", str(ports["ingest"]))
        results = tmp_path / "results.jsonl"
        wait_for("results", lambda: results.exists() and len(results.read_text().splitlines()) > 20, 120)
        scraped = {name: scrape(port) for name, port in ports.items()}
        status = subprocess.run(
            [sys.executable, "-m", "common.stack.status", "--config", str(config), "--once", "--interval", "1.5"],
            cwd=ROOT, env={**os.environ, "REDIS_URL": server.url, "COLUMNS": "200"}, capture_output=True, check=False,
            text=True, timeout=60,
        )  # fmt: skip
        live = subprocess.Popen(
            [sys.executable, "-m", "common.stack.status", "--config", str(config), "--interval", "0.5"], cwd=ROOT,
            env={**os.environ, "REDIS_URL": server.url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(3)
        live.send_signal(signal.SIGINT)
        live_out, live_err = live.communicate(timeout=10)  # Ctrl-C ends the live table at once, with 0
        for name in ("ingest", "detector", "sink"):
            assert procs.wait(name, 120) == 0, procs.tail(name)

    ingest, detector, sink = scraped["ingest"], scraped["detector"], scraped["sink"]
    for stream in "ab":
        assert (value(ingest, "streamyolo_ingest_published_total", stream=stream) or 0) > 0, ingest
        assert (value(detector, "streamyolo_frames_out_total", pool="main", stream=stream) or 0) > 0
        assert value(detector, "streamyolo_consumer_pending", group="detector:main", stream=stream) is not None
        assert value(detector, "streamyolo_consumer_lag", group="detector:main", stream=stream) is not None
        assert (value(sink, "streamyolo_results_stored_total", sink="out", stream=stream) or 0) > 0
        assert value(sink, "streamyolo_consumer_lag", group="sink:out", stream=stream) is not None
    for histogram in ("streamyolo_batch_size", "streamyolo_inference_seconds", "streamyolo_end_to_end_seconds"):
        assert (value(detector, f"{histogram}_count", pool="main") or 0) > 0, histogram
    assert value(detector, "streamyolo_gpu_memory_bytes", pool="main", device="cpu") is None  # CPU: no such gauge

    assert status.returncode == 0, status.stderr
    assert live.returncode == 0 and "detector replicas" in live_out, live_err
    table = status.stdout
    assert "streams" in table and "detector replicas" in table, table
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") > 3}
    for stream in "ab":
        fps_in = float(rows[stream].split("│")[2])
        assert 3 < fps_in < 20, table  # the cameras push 8 fps each
    assert "main/main-0" in table and "cpu" in table and "torch" in table, table

    lines = [json.loads(line) for line in procs.log("detector").splitlines() if line.strip()]
    assert {"ts", "level", "service", "pid", "logger", "message"} <= set(lines[0])
    assert {entry["service"] for entry in lines} == {"detector"}
    assert any("stopping" in entry["message"] for entry in lines)


def test_ingest_shows_a_progress_bar_for_an_image_folder(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(24):
        cv2.imwrite(str(folder / f"{i:03}.jpg"), np.full((48, 64, 3), i * 10, np.uint8))
    source = {"kind": "images", "path": str(folder), "fps": 30}
    config = write_config(tmp_path / "stack.yaml", "prog", [{"name": "v", "source": source}], {}, [])
    with EmbeddedServer(tmp_path / "r.sock") as server:
        done = subprocess.run(
            [sys.executable, "-m", "ingest", "--config", str(config), "--progress", "always"], cwd=ROOT,
            env={**os.environ, "REDIS_URL": server.url, "COLUMNS": "120"}, capture_output=True, text=True, check=False,
            timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "camera v" in done.stderr and "24/24 frames" in done.stderr, done.stderr
