"""The web sink's runner: a thread follows the result streams into a :class:`~sink.web.view.View`, and uvicorn
serves the app over it in-process.

``python -m sink --config stack.yaml --sink view`` with ``{kind: web, name: view, port: 8080}`` under ``sinks:``.
The follower reads with plain XREAD (``sink.client.subscribe``, no consumer group: it takes nothing from the other
sinks). Imported only when a web sink runs (``common.plugins.SINKS`` names it): no other sink loads a web server.
"""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from common.keys import Keys
from common.redis_io import Client, Unavailable, connect, frame_reader, newest, stream_keys
from common.service import Context
from common.wire import Result, WireError, decode
from common.workers import Worker, WorkerError
from sink.client.subscribe import subscribe
from sink.runner import SinkOptions
from sink.web import WebSinkConfig
from sink.web.app import create_app
from sink.web.view import View

log = logging.getLogger(__name__)


def follow(client: Client, keys: Keys, sink: WebSinkConfig, view: View, stop: threading.Event) -> None:
    """Feed the view until ``stop``: first each stream's newest result (so a quiet stream shows its last frame),
    then every result published from then on (one published in the instant between the two may be missed: a live
    view, not a record)."""
    pattern, head = keys.stage("results")
    try:
        for key, entry_id, payload in newest(client, stream_keys(client, pattern, head, sink.streams)):
            try:
                view.add(decode(payload, Result), live=False)
            except WireError as exc:
                log.warning("skipping malformed result %s %s: %s", key, entry_id, exc)
    except Unavailable as exc:  # only a head start: the live follow below retries by itself
        log.warning("redis unavailable (%s): starting without the streams' last results", exc)
    for result in subscribe(client, keys.prefix, sink.streams, block_ms=sink.block_ms, stop=stop,
                            rescan_s=sink.rescan_s):  # fmt: skip
        view.add(result)


def run(ctx: Context[SinkOptions], sink: WebSinkConfig) -> int:
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
    view = View(sink.window_s, sink.history)
    app = create_app(view, frame_reader(client, keys), sink.jpeg_quality)
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", loop="asyncio", http="h11",
                       ws="none", timeout_graceful_shutdown=max(1, int(ctx.shutdown.drain_s / 3)))
    )  # fmt: skip
    following = Worker("follow", lambda: follow(client, keys, sink, view, following.stopping))
    workers = [following.start(), Worker("http", lambda: server.run(sockets=[listener])).start()]
    log.info("web view %s on http://%s:%d/ following %s", sink.name, sink.host, sink.port, sink.streams)
    code = 0
    while (why := ctx.stop_reason()) is None:
        ctx.bounds.count(view.take_arrivals())
        if stopped := next((w for w in workers if not w.alive), None):
            why, code = f"the {stopped.name} thread stopped ({stopped.error or 'no error'})", 1
            break
        ctx.shutdown.wait(0.2)
    server.should_exit = True
    following.stop()
    for worker in workers:  # within the drain time, which Shutdown enforces from the signal on
        try:
            worker.join(ctx.shutdown.drain_s / 3)
        except WorkerError:
            code = 1  # logged by the worker when it failed
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
