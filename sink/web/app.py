"""The web view: a small ASGI app (Starlette, served by uvicorn in-process) showing the streams live.

``python -m sink --config stack.yaml --sink view`` with ``{kind: web, name: view, port: 8080}`` under ``sinks:``.
The page lists the streams with their fps; for the one picked it shows the latest frame with its boxes and labels
drawn (server-side, by the snapshot action's code), the recent detections, fps and end-to-end latency p50/p99.

A thread follows the result streams with plain XREAD (``sink.subscribe``, no consumer group: it takes nothing from
the other sinks) into a :class:`View`; the frame of a stream's latest result is fetched from its frames stream only
when the page asks for it, and drawn once per frame. JSON endpoints: ``/api/streams``,
``/api/streams/{name}/detections``; the image: ``/api/streams/{name}/frame.jpg``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from common.config import WebSinkConfig
from common.keys import Keys, valid_stream_name
from common.redis_io import TRANSIENT_ERRORS, connect, reply_entries, stream_keys
from common.service import Context
from common.wire import Frame, Result, WireError, decode
from sink.alerting import frame_fetcher
from sink.draw import draw_detections, frame_image
from sink.subscribe import subscribe

log = logging.getLogger(__name__)

FetchFrame = Callable[[str, str], Frame | None]
"""(stream, frame id) -> the frame, or None once it is trimmed from its frames stream."""

_WINDOW_CAP = 100_000
"""Most results kept per stream for its rates, whatever the window: memory stays bounded at any frame rate."""


# ---------------------------------------------------------------------------------------------------- state
@dataclass
class _Stream:
    latest: Result | None = None
    window: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=_WINDOW_CAP))
    """(arrival on this process's clock, capture time, end-to-end ms) of the results seen lately."""
    detections: deque[dict[str, Any]] = field(default_factory=deque)
    results: int = 0


class View:
    """What the follower saw, per stream, for the pages to read (thread-safe)."""

    def __init__(self, window_s: float, history: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.history = history
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._arrived = 0

    def add(self, result: Result, live: bool = True) -> None:
        """Record a result; one read back at start (``live`` False) shows its frame but counts in no rate."""
        if not valid_stream_name(result.stream):  # its name would never be a URL of the page, nor a key of ours
            log.warning("skipping a result of stream %r: not a valid stream name", result.stream[:64])
            return
        now = self._clock()
        rows = [
            {"frame_id": result.frame_id, "seq": result.seq, "capture_ts": result.capture_ts, "label": d.label,
             "score": d.score, "box": list(d.box)}
            for d in result.detections
        ]  # fmt: skip
        with self._lock:
            s = self._streams.setdefault(result.stream, _Stream(detections=deque(maxlen=self.history)))
            if s.latest is None or result.capture_ts >= s.latest.capture_ts:  # replicas may publish out of order
                s.latest = result
            s.detections.extendleft(rows)  # newest first
            if live:
                s.window.append((now, result.capture_ts, result.timings.end_to_end_ms))
                s.results += 1
                self._arrived += 1

    def take_arrivals(self) -> int:
        """Live results added since the last call (the bounded modes count them)."""
        with self._lock:
            n, self._arrived = self._arrived, 0
        return n

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._streams)

    def latest(self, name: str) -> Result | None:
        """The newest result of a stream; KeyError for a stream not seen."""
        with self._lock:
            return self._streams[name].latest

    def detections(self, name: str) -> list[dict[str, Any]]:
        """Recent detections of a stream, newest first; KeyError for a stream not seen."""
        with self._lock:
            return list(self._streams[name].detections)

    def summary(self) -> list[dict[str, Any]]:
        """Every stream with its rate and latency over the window, and its latest result's frame."""
        now = self._clock()
        out = []
        with self._lock:
            for name in sorted(self._streams):
                s = self._streams[name]
                while s.window and s.window[0][0] < now - self.window_s:
                    s.window.popleft()
                captures = [c for _, c, _ in s.window]
                latencies = sorted(e for _, _, e in s.window)
                latest = s.latest
                out.append({
                    "name": name,
                    "fps": _rate(captures),
                    "latency_p50_ms": _percentile(latencies, 0.50),
                    "latency_p99_ms": _percentile(latencies, 0.99),
                    "results": s.results,
                    "frame_id": latest.frame_id if latest else None,
                    "seq": latest.seq if latest else None,
                    "capture_ts": latest.capture_ts if latest else None,
                    "detections": len(latest.detections) if latest else 0,
                })  # fmt: skip
        return out


def _rate(captures: list[float]) -> float:
    """Frames per second of the stream's own clock (capture times): neither the detector's batching nor clock
    differences between hosts bend it. 0 with fewer than two results in the window."""
    if len(captures) < 2 or max(captures) <= min(captures):
        return 0.0
    return (len(captures) - 1) / (max(captures) - min(captures))


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values; None for none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# ---------------------------------------------------------------------------------------------------- follower
def follow(client: redis.Redis, keys: Keys, sink: WebSinkConfig, view: View, stop: threading.Event) -> None:
    """Feed the view until ``stop``: first each stream's newest result (so a quiet stream shows its last frame),
    then every result published from then on (one published in the instant between the two may be missed: a live
    view, not a record)."""
    pattern, head = keys.stage("results")
    try:
        for key in stream_keys(client, pattern, head, sink.streams):
            newest: Any = client.xrevrange(key, count=1)
            for _, entry_id, payload, _ in reply_entries([(key, newest)]):
                try:
                    view.add(decode(payload, Result), live=False)
                except WireError as exc:
                    log.warning("skipping malformed result %s %s: %s", key, entry_id, exc)
    except TRANSIENT_ERRORS as exc:  # only a head start: the live follow below retries by itself
        log.warning("redis unavailable (%s): starting without the streams' last results", exc)
    for result in subscribe(client, keys.prefix, sink.streams, block_ms=sink.block_ms, stop=stop,
                            rescan_s=sink.rescan_s):  # fmt: skip
        view.add(result)


# ---------------------------------------------------------------------------------------------------- app
def create_app(view: View, fetch: FetchFrame, jpeg_quality: int = 80) -> Starlette:
    """The page and its API over a view; ``fetch`` reads a frame back from its frames stream."""
    drawn: dict[str, tuple[str, bytes]] = {}
    """Stream -> (frame id, JPEG with boxes) of the last frame drawn: each frame is drawn once, not per viewer."""
    drawn_lock = threading.Lock()

    def stream_of(request: Request) -> str:
        name = str(request.path_params["name"])
        if not valid_stream_name(name):  # checked before any lookup: a name never reaches a key unchecked
            raise HTTPException(400, "not a stream name")
        if name not in view.names():
            raise HTTPException(404, "no such stream")
        return name

    def page(_: Request) -> Response:
        return HTMLResponse(_PAGE, headers={"Content-Security-Policy": _CSP, **_NO_STORE})

    def streams(_: Request) -> Response:
        return JSONResponse({"window_s": view.window_s, "streams": view.summary()}, headers=_NO_STORE)

    def detections(request: Request) -> Response:
        name = stream_of(request)
        return JSONResponse({"stream": name, "detections": view.detections(name)}, headers=_NO_STORE)

    def frame(request: Request) -> Response:
        name = stream_of(request)
        result = view.latest(name)
        with drawn_lock:
            cached = drawn.get(name)
        if result is not None and (cached is None or cached[0] != result.frame_id):
            jpeg = _render(fetch, result, jpeg_quality)
            if jpeg is not None:  # else the frame is gone: the last one drawn stands in
                cached = (result.frame_id, jpeg)
                with drawn_lock:
                    drawn[name] = cached
        if cached is None:
            raise HTTPException(404, "no frame of this stream is kept any more")
        return Response(cached[1], media_type="image/jpeg", headers={"X-Frame-Id": cached[0], **_NO_STORE})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/streams", streams),
            Route("/api/streams/{name}/detections", detections),
            Route("/api/streams/{name}/frame.jpg", frame),
        ]
    )


def _render(fetch: FetchFrame, result: Result, quality: int) -> bytes | None:
    """The result's frame as JPEG with its boxes drawn; None when it is gone or cannot be read."""
    try:
        found = fetch(result.stream, result.frame_id)
        if found is None:
            return None
        image = frame_image(found)
    except TRANSIENT_ERRORS as exc:
        raise HTTPException(503, "redis unavailable") from exc
    except ValueError as exc:  # WireError too: a bad frame is shown as missing, not as a server error
        log.warning("frame %s of %s cannot be shown: %s", result.frame_id, result.stream, exc)
        return None
    draw_detections(image, result)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpeg.tobytes() if ok else None


# ---------------------------------------------------------------------------------------------------- service
def serve(ctx: Context, sink: WebSinkConfig) -> int:
    """Follow and serve until a signal (the first drains: requests in flight finish) or a bound; 1 when the
    address cannot be served or the follower fails."""
    keys = Keys(ctx.config.streams.prefix)
    client = connect(ctx.redis_url, ctx.config.redis)
    try:
        listener = _listen(sink.host, sink.port)
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s (another process on that port? set the sink's host and port)",
                  sink.host, sink.port, exc)  # fmt: skip
        client.close()
        return 1
    view, stop = View(sink.window_s, sink.history), threading.Event()
    app = create_app(view, frame_fetcher(client, keys), sink.jpeg_quality)
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", loop="asyncio", http="h11",
                       ws="none", timeout_graceful_shutdown=max(1, int(ctx.shutdown.drain_s / 3)))
    )  # fmt: skip
    threads = [
        threading.Thread(target=follow, args=(client, keys, sink, view, stop), name="follow", daemon=True),
        threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="http", daemon=True),
    ]
    for thread in threads:
        thread.start()
    log.info("web view %s on http://%s:%d/ following %s", sink.name, sink.host, sink.port, sink.streams)
    code = 0
    while (why := ctx.stop_reason()) is None:
        ctx.bounds.count(view.take_arrivals())
        if not all(t.is_alive() for t in threads):
            why, code = f"the {next(t.name for t in threads if not t.is_alive())} thread stopped", 1
            break
        ctx.shutdown.wait(0.2)
    server.should_exit = True
    stop.set()
    for thread in threads:  # within the drain time, which Shutdown enforces from the signal on
        thread.join(ctx.shutdown.drain_s / 3)
    listener.close()
    client.close()
    log.info("stopping (%s); %d results followed", why, sum(s["results"] for s in view.summary()))
    return code


def _listen(host: str, port: int) -> socket.socket:
    """Bound here, before the server starts, so an address in use fails the start at once and says so."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------------------------------------- page
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

_CSS = """
body { font: 14px system-ui, sans-serif; margin: 0; background: #15171a; color: #e6e6e6; }
header { display: flex; gap: 1em; align-items: center; padding: .6em 1em; background: #1f2226; flex-wrap: wrap; }
h1 { font-size: 1.1em; margin: 0 1em 0 0; }
nav button { background: #2b2f35; color: inherit; border: 1px solid #444; border-radius: 4px; padding: .3em .7em;
  margin: .15em; cursor: pointer; font: inherit; }
nav button[aria-pressed="true"] { background: #3a6ea5; border-color: #5b8fc7; }
nav .fps { opacity: .7; margin-left: .5em; font-size: .9em; }
main { display: flex; gap: 1.5em; padding: 1em; flex-wrap: wrap; align-items: flex-start; }
#frame { width: 640px; max-width: 100%; background: #000; display: block; image-rendering: auto; }
.stats { display: flex; gap: 1.5em; margin: .5em 0; }
.stats b { font-size: 1.3em; }
table { border-collapse: collapse; min-width: 28em; }
th, td { text-align: left; padding: .2em .6em; border-bottom: 1px solid #333; font-variant-numeric: tabular-nums; }
#status { opacity: .7; margin-left: auto; }
"""

_JS = """
"use strict";
const $ = (id) => document.getElementById(id);
const state = { current: null, frameId: null };

function fixed(value, digits, unit) {
  return value === null || value === undefined ? "\\u2013" : value.toFixed(digits) + unit;
}
function clock(ts) {
  return new Date(ts * 1000).toISOString().slice(11, 23);
}
async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
}
function pick(name) {
  state.current = name;
  state.frameId = null;
  history.replaceState(null, "", "#" + encodeURIComponent(name));
  refresh();
}
function renderButtons(list) {
  const nav = $("streams");
  const names = list.map((s) => s.name).join("\\n");
  if (nav.dataset.names !== names) {  // rebuilt only when streams come or go, so a click is never lost
    nav.replaceChildren(...list.map((s) => {
      const button = document.createElement("button");
      button.type = "button";
      button.id = "stream-" + s.name;
      button.dataset.stream = s.name;
      const label = document.createElement("span");
      label.textContent = s.name;
      const fps = document.createElement("span");
      fps.className = "fps";
      button.append(label, fps);
      button.addEventListener("click", () => pick(s.name));
      return button;
    }));
    nav.dataset.names = names;
  }
  for (const s of list) {
    const button = document.getElementById("stream-" + s.name);
    button.querySelector(".fps").textContent = fixed(s.fps, 1, " fps");
    button.setAttribute("aria-pressed", String(s.name === state.current));
  }
}
function renderStream(s) {
  $("stream-title").textContent = s.name;
  $("fps").textContent = fixed(s.fps, 1, "");
  $("latency-p50").textContent = fixed(s.latency_p50_ms, 0, " ms");
  $("latency-p99").textContent = fixed(s.latency_p99_ms, 0, " ms");
  $("frame-info").textContent = s.seq === null ? "no result yet"
    : "frame #" + s.seq + " captured " + clock(s.capture_ts) + " UTC, " + s.detections + " detections";
  if (s.frame_id !== null && s.frame_id !== state.frameId) {
    const img = $("frame");
    img.dataset.stream = s.name;
    img.src = "/api/streams/" + encodeURIComponent(s.name) + "/frame.jpg?frame=" + encodeURIComponent(s.frame_id);
    state.frameId = s.frame_id;
  }
}
function renderDetections(rows) {
  const body = $("detections-body");
  body.replaceChildren(...rows.map((d) => {
    const row = document.createElement("tr");
    cell(row, clock(d.capture_ts));
    cell(row, String(d.seq));
    cell(row, d.label);
    cell(row, d.score.toFixed(2));
    cell(row, d.box.map((v) => Math.round(v)).join(", "));
    return row;
  }));
}
async function refresh() {
  clearTimeout(state.timer);
  try {
    const data = await getJSON("/api/streams");
    const list = data.streams;
    if (!list.some((s) => s.name === state.current)) {
      const wanted = decodeURIComponent(location.hash.slice(1));
      state.current = list.some((s) => s.name === wanted) ? wanted : (list.length ? list[0].name : null);
      state.frameId = null;
    }
    renderButtons(list);
    $("window").textContent = String(data.window_s);
    const s = list.find((item) => item.name === state.current);
    if (s) {
      renderStream(s);
      const shown = s.name;
      const dets = await getJSON("/api/streams/" + encodeURIComponent(shown) + "/detections");
      if (shown === state.current) renderDetections(dets.detections);
    }
    $("status").textContent = list.length ? "live" : "waiting for results\\u2026";
  } catch (err) {
    $("status").textContent = "cannot reach the server: " + err.message;
  }
  state.timer = setTimeout(refresh, 700);
}
refresh();
"""

_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>streamyolo live view</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>streamyolo</h1><nav id="streams" aria-label="streams"></nav><span id="status"></span></header>
<main>
<section>
<h2 id="stream-title"></h2>
<img id="frame" alt="latest frame with its detections">
<p id="frame-info"></p>
<div class="stats">
<span>fps <b id="fps">&ndash;</b></span>
<span>latency p50 <b id="latency-p50">&ndash;</b></span>
<span>p99 <b id="latency-p99">&ndash;</b></span>
<span>over the last <span id="window"></span> s</span>
</div>
</section>
<section>
<h2>Recent detections</h2>
<table id="detections">
<thead><tr><th>captured (UTC)</th><th>frame</th><th>label</th><th>score</th><th>box (px)</th></tr></thead>
<tbody id="detections-body"></tbody>
</table>
</section>
</main>
<script>{_JS}</script>
</body>
</html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this page's own inline script and style run: an injected one (a label, a stream name) would not.
_CSP = (
    f"default-src 'none'; script-src {_sha256(_JS)}; style-src {_sha256(_CSS)}; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
