"""The web sink's runner: threads follow the result streams (and, with a tracker, its tracks and events streams)
into a :class:`~sink.web.view.View`, and uvicorn serves the app over it in-process.

``python -m sink --config stack.yaml --sink view`` with ``{kind: web, name: view, port: 8080}`` under ``sinks:``.
The followers read with plain XREAD (``sink.client.subscribe``, ``common.redis_io.follow``; no consumer group: they
take nothing from the other sinks). The login's users are read (``users_env`` from the environment) before anything
is served: a missing variable or a bad hash stops the start (exit 2), saying which. Imported only when a web sink
runs (``common.plugins.SINKS`` names it): no other sink loads a web server.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Literal

import uvicorn

from common.keys import Keys
from common.redis_io import (
    Client,
    Unavailable,
    connect,
    fields,
    frame_reader,
    newest,
    newest_payloads,
    stream_keys,
)
from common.redis_io import (
    follow as follow_entries,
)
from common.service import EXIT_CONFIG, Context
from common.wire import Event, Result, Tracks, WireError, decode
from common.workers import Worker, WorkerError
from sink.client.subscribe import subscribe
from sink.clips import make_clip
from sink.runner import SinkOptions
from sink.web import WebSinkConfig
from sink.web.app import ClipMaker, Counts, clip_span, create_app
from sink.web.auth import Auth, UsersError, load_users
from sink.web.view import View

log = logging.getLogger(__name__)


def follow(client: Client, keys: Keys, sink: WebSinkConfig, view: View, stop: threading.Event) -> None:
    """Feed the view until ``stop``: first each stream's newest result (so a quiet stream shows its last frame),
    then every result published from then on (one published in the instant between the two may be missed: a live
    view, not a record)."""
    try:
        for key, entry_id, payload in newest(client, stream_keys(client, keys.stage("results"), sink.streams)):
            try:
                view.add(decode(payload, Result), live=False)
            except WireError as exc:
                log.warning("skipping malformed result %s %s: %s", key, entry_id, exc)
    except Unavailable as exc:  # only a head start: the live follow below retries by itself
        log.warning("redis unavailable (%s): starting without the streams' last results", exc)
    for result in subscribe(client, keys, sink.streams, block_ms=sink.block_ms, stop=stop,
                            rescan_s=sink.rescan_s):  # fmt: skip
        view.add(result)


def follow_tracker(
    client: Client,
    keys: Keys,
    sink: WebSinkConfig,
    view: View,
    stop: threading.Event,
    stage: Literal["tracks", "events"],
) -> None:
    """Feed the view the tracker's tracks (or events) until ``stop``: first the newest of each camera (the last
    ``trail`` tracks, for the trails; the last ``events`` events), then every one published from then on."""
    if sink.tracker is None:
        raise ValueError("the web sink follows no tracker")
    found_in = keys.stage(stage, sink.tracker)

    def add(key: str, entry_id: str, payload: bytes | None) -> None:
        try:
            if stage == "tracks":
                view.add_tracks(decode(payload, Tracks))
            else:
                view.add_event(decode(payload, Event))
        except WireError as exc:
            log.warning("skipping malformed %s %s %s: %s", stage, key, entry_id, exc)

    kept = max(1, sink.trail) if stage == "tracks" else sink.events
    try:
        found = stream_keys(client, found_in, sink.streams)
        for key, payloads in newest_payloads(client, dict.fromkeys(found, kept)).items():
            for kept_payload in reversed(payloads):  # oldest first, as they came
                add(key, "(newest)", kept_payload)
    except Unavailable as exc:  # only a head start: the live follow below retries by itself
        log.warning("redis unavailable (%s): starting without the cameras' last %s", exc, stage)
    for key, entry_id, payload in follow_entries(client, found_in, sink.streams, block_ms=sink.block_ms,
                                                 stop=stop, rescan_s=sink.rescan_s):  # fmt: skip
        add(key, entry_id, payload)


def event_clips(client: Client, keys: Keys, sink: WebSinkConfig) -> ClipMaker:
    """Clips of events: from the track's first sighting (less the pre-roll) to the event (and the post-roll)."""

    def clip(event: Event) -> bytes:
        start, end, pre = clip_span(event, sink.clip_pre_roll_s, sink.clip_post_roll_s, sink.clip_max_s)
        return make_clip(client, keys, event.stream, start, end, pre, max_frames=sink.clip_max_frames)

    return clip


def tracker_counts(client: Client, keys: Keys, tracker: str) -> Counts:
    """A camera's counts hash (numbers; a field that is not one is left out)."""

    def counts(stream: str) -> dict[str, int]:
        out = {}
        for name, value in fields(client, keys.counts(tracker, stream)).items():
            try:
                out[name] = int(value)
            except ValueError:
                continue
        return out

    return counts


def run(ctx: Context[SinkOptions], sink: WebSinkConfig) -> int:
    """Follow and serve until a signal (the first drains: requests in flight finish) or a bound; 1 when the
    address cannot be served or a follower fails, 2 when the login's users cannot be read."""
    keys = ctx.config.keys
    try:
        auth = _auth(sink)
    except UsersError as exc:
        log.error("web view %s: %s", sink.name, exc)
        return EXIT_CONFIG
    client = connect(ctx.redis_url, ctx.config.redis)
    try:
        listener = _listen(sink.host, sink.port)
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s (another process on that port? set the sink's host and port)",
                  sink.host, sink.port, exc)  # fmt: skip
        client.close()
        return 1
    view = View(sink.window_s, sink.history, tracker=sink.tracker, trail=sink.trail, events=sink.events)
    tracker = sink.tracker
    app = create_app(
        view, frame_reader(client, keys), sink.jpeg_quality, auth=auth,
        clip=event_clips(client, keys, sink) if tracker else None,
        counts=tracker_counts(client, keys, tracker) if tracker else None,
    )  # fmt: skip
    # proxy_headers off: X-Forwarded-For must never stand in for the peer's address, which the trusted proxy check
    # and the login's rate limits are about.
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", loop="asyncio", http="h11",
                       ws="none", proxy_headers=False, timeout_graceful_shutdown=max(1, int(ctx.shutdown.drain_s / 3)))
    )  # fmt: skip
    followers = [_follower("follow", lambda stop: follow(client, keys, sink, view, stop))]
    if tracker:
        followers += [
            _follower("follow-tracks", lambda stop: follow_tracker(client, keys, sink, view, stop, "tracks")),
            _follower("follow-events", lambda stop: follow_tracker(client, keys, sink, view, stop, "events")),
        ]
    workers = [*(f.start() for f in followers), Worker("http", lambda: server.run(sockets=[listener])).start()]
    log.info("web view %s on http://%s:%d/ following %s%s; %s", sink.name, sink.host, sink.port, sink.streams,
             f" and the tracks and events of tracker {tracker}" if tracker else "", _login(sink))  # fmt: skip
    code = 0
    while (why := ctx.stop_reason()) is None:
        ctx.bounds.count(view.take_arrivals())
        if stopped := next((w for w in workers if not w.alive), None):
            why, code = f"the {stopped.name} thread stopped ({stopped.error or 'no error'})", 1
            break
        ctx.shutdown.wait(0.2)
    server.should_exit = True
    for follower in followers:
        follower.stop()
    for worker in workers:  # within the drain time, which Shutdown enforces from the signal on
        try:
            worker.join(ctx.shutdown.drain_s / 3)
        except WorkerError:
            code = 1  # logged by the worker when it failed
    listener.close()
    client.close()
    log.info("stopping (%s); %d results followed", why, sum(s["results"] for s in view.summary()))
    return code


def _follower(name: str, body: Callable[[threading.Event], None]) -> Worker:
    worker: Worker = Worker(name, lambda: body(worker.stopping))
    return worker


def _auth(sink: WebSinkConfig) -> Auth | None:
    if sink.auth is None:
        return None
    users = load_users(sink.auth, os.environ) if sink.auth.mode == "password" else {}
    return Auth(sink.auth, users)


def _login(sink: WebSinkConfig) -> str:
    if sink.auth is None:
        return "no login (loopback only)"
    if sink.auth.mode == "proxy":
        return f"users named by {sink.auth.trusted_proxy_header} from {[str(n) for n in sink.auth.trusted_proxies]}"
    return "login required"


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
