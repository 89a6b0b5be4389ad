"""The web view in a real browser: Debian's headless Chromium, driven by Selenium, on real processes.

The whole stack (two synthetic cameras, the detector with the bundled demo model, the web sink) runs on an
embedded server; the page must list both streams with their fps, switch between them, show frames with the boxes
drawn (found in a screenshot by their colour, which the synthetic frames never contain) and list the detections.
A second test feeds hostile labels straight into Redis: they must show as text, never as markup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import cv2
import httpx
import numpy as np
import pytest
import redis
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import connect, read_entry
from common.wire import FIELD, Detection, Frame, Result, Timings, decode, encode
from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(480)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MODEL = ROOT / "detector" / "models" / "shapes"
SHAPES = {"circle", "square", "triangle"}
T = TypeVar("T")


def is_box_red(bgr: np.ndarray) -> np.ndarray:
    """Pixels of the boxes' colour (sink.draw.BOX_COLOUR, pure red), with room for JPEG and scaling."""
    b, g, r = (bgr[..., i].astype(int) for i in range(3))
    mask: np.ndarray = (r > 180) & (g < 70) & (b < 70)
    return mask


# ---------------------------------------------------------------------------------------------------- helpers
class Procs:
    """Service processes this test started, each logging to a file; whatever is left is killed at the end."""

    def __init__(self, tmp: Path, config: Path, url: str) -> None:
        self.tmp, self.config, self.url = tmp, config, url
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "REDIS_URL": self.url, "PYTHONUNBUFFERED": "1"}
        with (self.tmp / f"{name}.log").open("wb") as log:  # a file, not a pipe: a full pipe would stall it
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--config", str(self.config), *args],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        """SIGTERM (a drain), then the exit code."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[WebDriver]:
    """Debian's Chromium, headless, through its own chromedriver (set explicitly: Selenium Manager never
    downloads anything)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"no {' or '.join(missing)}: apt-get install chromium chromium-driver (.ci/run installs them)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'chrome'}",
                ):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, to check for errors
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, check: Callable[[WebDriver], T], what: str, timeout: float = 30) -> T:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def shown(driver: WebDriver) -> dict[str, Any]:
    """What the page shows now, read in one go."""
    state: dict[str, Any] = driver.execute_script(
        """
        const img = document.getElementById("frame");
        const text = (id) => document.getElementById(id).textContent;
        return {
          buttons: Array.from(document.querySelectorAll("#streams button")).map((b) => b.dataset.stream),
          pressed: Array.from(document.querySelectorAll("#streams button[aria-pressed=true]")).map((b) => b.id),
          title: text("stream-title"), fps: text("fps"), p50: text("latency-p50"), p99: text("latency-p99"),
          info: text("frame-info"), status: text("status"), hash: location.hash,
          src: img.getAttribute("src") || "", stream: img.dataset.stream || "",
          loaded: img.complete && img.naturalWidth > 0,
          labels: Array.from(document.querySelectorAll("#detections-body td:nth-child(3)")).map((c) => c.textContent),
        };
        """
    )
    return state


def number(text: str) -> float:
    try:
        return float(text.split(maxsplit=1)[0])
    except (ValueError, IndexError):
        return 0.0


def console_errors(driver: WebDriver) -> list[str]:
    """SEVERE console entries (a blocked script or style, a failed request), but the favicon nobody serves."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [e["message"] for e in entries if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]


def api_ready(port: int, streams: set[str]) -> bool:
    try:
        listed = httpx.get(f"http://127.0.0.1:{port}/api/streams", timeout=2).json()["streams"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    live = {s["name"] for s in listed if s["fps"] > 0 and s["frame_id"] and s["detections"] > 0}
    return streams <= live


# ---------------------------------------------------------------------------------------------------- the stack
def stack_config(tmp: Path, port: int) -> Path:
    config = tmp / "stack.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        redis: {{embedded: {{socket_dir: {tmp}}}}}
        streams: {{prefix: web, frames_maxlen: 500}}
        ingest:
          cameras:
            - {{name: east, source: {{kind: synthetic, seed: 41, width: 320, height: 240, fps: 4, shapes: 3}}}}
            - {{name: west, source: {{kind: synthetic, seed: 42, width: 320, height: 240, fps: 4, shapes: 4}}}}
        detector:
          pools:
            - name: main
              model: {{folder: {MODEL}, input_size: 256}}
              max_batch: 4
              block_ms: 500
              ignore_labels: ["NULL"]
        sinks:
          - {{kind: web, name: view, port: {port}, block_ms: 300, window_s: 10}}
        """)
    )
    return config


def test_the_page_shows_both_streams_live_switches_between_them_and_draws_the_boxes(
    tmp_path: Path, chrome: WebDriver
) -> None:
    port = free_port()
    config = stack_config(tmp_path, port)
    with EmbeddedServer(tmp_path / "v.sock") as server:
        procs = Procs(tmp_path, config, server.url)
        try:
            web = procs.start("web", "sink", "--sink", "view", "--duration", "400")
            detector = procs.start("detector", "detector", "--replica", "r0", "--duration", "400")
            ingest = procs.start("ingest", "ingest", "--duration", "400")
            deadline = time.monotonic() + 240  # the detector loads TensorFlow first: slow on a busy 2-core machine
            while not api_ready(port, {"east", "west"}):
                for name, proc in (("web", web), ("detector", detector), ("ingest", ingest)):
                    assert proc.poll() is None, f"{name} exited:\n{procs.log(name)}"
                assert time.monotonic() < deadline, f"no live results on the page's API:\n{procs.log('web')}"
                time.sleep(0.5)

            chrome.get(f"http://127.0.0.1:{port}/")
            now = wait(chrome, lambda d: (s := shown(d))["buttons"] == ["east", "west"] and s, "both streams listed")
            first = wait(chrome, lambda d: (s := shown(d))["loaded"] and number(s["fps"]) > 0 and s["labels"] and s,
                         "the first stream's frame, fps and detections")  # fmt: skip
            assert first["title"] == "east" and first["stream"] == "east" and first["pressed"] == ["stream-east"]
            assert first["src"].startswith("/api/streams/east/frame.jpg?frame=")
            assert number(first["p50"]) > 0 and number(first["p99"]) >= number(first["p50"]), first
            assert set(first["labels"]) <= SHAPES, first["labels"]
            assert first["status"] == "live" and now["title"] in ("", "east")

            chrome.find_element(By.ID, "stream-west").click()
            west = wait(chrome, lambda d: (s := shown(d))["title"] == "west" and s["loaded"] and s["stream"] == "west"
                        and ", 0 detections" not in s["info"] and s, "the switch to west")  # fmt: skip
            assert west["src"].startswith("/api/streams/west/frame.jpg?frame=") and west["src"] != first["src"]
            assert west["pressed"] == ["stream-west"] and west["hash"] == "#west"
            assert number(west["fps"]) > 0, west

            # The screenshot: the boxes' colour within the image's rectangle, against the same frame undrawn.
            client: redis.Redis = connect(server.url)
            for _ in range(10):  # the page may move on to a newer frame meanwhile: take it again
                before = shown(chrome)
                png = chrome.get_screenshot_as_png()
                after = shown(chrome)
                if before["src"] == after["src"] and after["loaded"] and after["stream"] == "west":
                    break
                time.sleep(0.3)
            else:
                pytest.fail("the frame never held still for a screenshot")
            (tmp_path / "web_view.png").write_bytes(png)
            chrome.save_screenshot(str(tmp_path / "web_view_full.png"))
            rect = chrome.find_element(By.ID, "frame").rect
            shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            x, y, w, h = (round(rect[k]) for k in ("x", "y", "width", "height"))
            image = shot[y : y + h, x : x + w]
            frame_id = parse_qs(urlparse(after["src"]).query)["frame"][0]
            raw = read_entry(client, Keys("web").frames("west"), frame_id)
            assert raw is not None, "the frame shown is still in its stream"
            frame = decode(raw, Frame)
            decoded = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
            assert decoded is not None
            undrawn = cv2.resize(decoded, (w, h))
            red, red_before = int(is_box_red(image).sum()), int(is_box_red(undrawn).sum())
            print(f"box-coloured pixels: {red} in the screenshot's image ({w}x{h}), {red_before} in the frame itself")
            assert w >= 320 and h >= 240 and red >= 500 and red_before < 50, (red, red_before)
            chrome.find_element(By.ID, "stream-east").click()
            wait(chrome, lambda d: shown(d)["stream"] == "east", "the switch back to east")
            assert console_errors(chrome) == []
            client.close()

            assert procs.stop(web) == 0, procs.log("web")  # the first SIGTERM drains: a clean exit
            assert "stopping (signal)" in procs.log("web")
            for proc in (ingest, detector):
                procs.stop(proc)
        finally:
            procs.kill_all()


# ---------------------------------------------------------------------------------------------------- escaping
HOSTILE = "<img src=x onerror=\"document.title='owned'\">"


def push(client: redis.Redis, stream: str, seq: int, labels: list[str]) -> None:
    """A real JPEG frame, and a result for it with the given labels."""
    keys = Keys("web")
    image = np.full((240, 320, 3), 90, np.uint8)
    frame = Frame(
        stream=stream, seq=seq, capture_ts=time.time(), width=320, height=240, encoding="jpeg", image_width=320,
        image_height=240, data=cv2.imencode(".jpg", image)[1].tobytes(),
    )  # fmt: skip
    frame_id = client.xadd(keys.frames(stream), {FIELD: encode(frame)}).decode()
    result = Result(
        frame_id=frame_id, stream=stream, seq=seq, capture_ts=frame.capture_ts, width=320, height=240, pool="main",
        replica="r0", engine="torch", device="cpu", batch_size=1, published_ts=time.time(),
        timings=Timings(queue_ms=1, decode_ms=1, inference_ms=5, postprocess_ms=1, end_to_end_ms=12),
        detections=[Detection(label=label, class_id=0, score=0.8, box=(40, 40, 120, 120)) for label in labels],
    )  # fmt: skip
    client.xadd(keys.results(stream), {FIELD: encode(result)})


def test_labels_are_shown_as_text_the_port_is_checked_and_the_bounded_mode_ends_by_itself(
    tmp_path: Path, chrome: WebDriver
) -> None:
    port = free_port()
    config = tmp_path / "stack.yaml"
    config.write_text(f"streams: {{prefix: web}}\nsinks: [{{kind: web, name: view, port: {port}, block_ms: 200}}]\n")
    with EmbeddedServer(tmp_path / "v.sock") as server:
        procs = Procs(tmp_path, config, server.url)
        client: redis.Redis = connect(server.url)
        feeding = threading.Event()

        def feed() -> None:
            seq = 0
            while not feeding.wait(0.2):
                push(client, "lobby", seq, [HOSTILE, "</td><td>x"])
                seq += 1

        feeder = threading.Thread(target=feed, daemon=True)
        try:
            web = procs.start("web", "sink", "--sink", "view", "--until-idle", "3", "--duration", "120")
            feeder.start()
            deadline = time.monotonic() + 60
            while not api_ready(port, {"lobby"}):
                assert web.poll() is None and time.monotonic() < deadline, procs.log("web")
                time.sleep(0.3)
            # A second web view on the same port fails at once, saying so.
            taken = procs.start("taken", "sink", "--sink", "view")
            assert taken.wait(60) == 1 and "cannot serve on 127.0.0.1" in procs.log("taken"), procs.log("taken")

            chrome.get(f"http://127.0.0.1:{port}/")
            state = wait(chrome, lambda d: (s := shown(d))["labels"] and s["loaded"] and s, "the hostile labels")
            assert set(state["labels"]) == {HOSTILE, "</td><td>x"}
            assert chrome.title == "streamyolo live view"  # the onerror handler never ran
            assert chrome.find_elements(By.CSS_SELECTOR, "#detections-body img, #detections-body td td") == []
            assert console_errors(chrome) == []
            for path in ("/api/streams/nope/frame.jpg", "/api/streams/a:b/detections"):
                assert httpx.get(f"http://127.0.0.1:{port}{path}").status_code in (400, 404)
        finally:
            feeding.set()
            feeder.join(5)
        # Results stop: --until-idle ends the real loop by itself.
        assert web.wait(30) == 0, procs.log("web")
        assert "stopping (idle for 3 s)" in procs.log("web")
        client.close()
        procs.kill_all()
