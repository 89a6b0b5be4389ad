"""Run the whole stack locally without Docker: the embedded server, ingest, every detector replica, every sink.

``streamyolo --config compose/local.yaml [--duration S]``. Ctrl-C (or the duration) stops ingest first, lets the
detectors and sinks finish what is already queued (up to ``--drain`` seconds), then stops them; a second Ctrl-C
stops everything at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import redis

from common.config import ConfigError, ConsumerConfig, StackConfig, load_config
from common.embedded import redis_url
from common.keys import Keys, matches
from common.redact import redact
from common.redis_io import TRANSIENT_ERRORS, connect, stream_keys
from common.service import EXIT_CONFIG, Shutdown

log = logging.getLogger("streamyolo")


def commands(cfg: StackConfig, config: Path) -> dict[str, list[str]]:
    """Every process of the stack, by a display name."""
    base = ["--config", str(config)]
    procs: dict[str, list[str]] = {}
    for sink in cfg.sinks:
        procs[f"sink-{sink.name}"] = ["sink", *base, "--sink", sink.name, "--consumer", "local"]
    for pool in cfg.detector.pools:
        for r in range(pool.replicas):
            name = f"{pool.name}-{r}"
            procs[f"detector-{name}"] = ["detector", *base, "--pool", pool.name, "--replica", name]
    if cfg.ingest.process_per_camera:
        for camera in cfg.ingest.cameras:
            procs[f"ingest-{camera.name}"] = ["ingest", *base, "--camera", camera.name]
    elif cfg.ingest.cameras:
        procs["ingest"] = ["ingest", *base]
    return procs


def backlog(cfg: StackConfig, client: redis.Redis) -> int:
    """Entries some configured pool or sink has not finished: never delivered (lag) or not yet acked (pending).

    A group that does not exist yet on a stream (its reader has not discovered the stream) owes every entry."""
    keys = Keys(cfg.streams.prefix)
    stages = (
        (
            keys.frames_pattern(),
            keys.frames(""),
            {keys.detector_group(p.name): p.streams for p in cfg.detector.pools},
        ),
        # A web view has no group: nothing is queued for it, so nothing waits on it.
        (
            keys.results_pattern(),
            keys.results(""),
            {keys.sink_group(s.name): s.streams for s in cfg.sinks if isinstance(s, ConsumerConfig)},
        ),
    )
    total = 0
    for pattern, head, groups in stages:
        for key in stream_keys(client, pattern, head, ["*"]):
            info = {g["name"].decode(): g for g in client.xinfo_groups(key)}
            for group, streams in groups.items():
                if not matches(key[len(head) :], streams):
                    continue
                g = info.get(group)
                total += client.xlen(key) if g is None else int(g["pending"]) + int(g.get("lag") or 0)
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="streamyolo", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("compose/local.yaml"), help="stack config (YAML)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--drain", type=float, default=30.0, metavar="S", help="longest wait for queued work on stop")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s streamyolo %(levelname)s: %(message)s")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    procs: dict[str, subprocess.Popen[bytes]] = {}
    shutdown = Shutdown(drain_s=args.drain + 30, on_exit=lambda: _kill(procs.values())).install()
    with redis_url(cfg) as url:
        env = {**os.environ, "REDIS_URL": url}
        try:
            for name, cmd in commands(cfg, args.config).items():
                # Own sessions: a terminal's Ctrl-C reaches only the launcher, which stops the stack in order.
                procs[name] = subprocess.Popen([sys.executable, "-m", *cmd], env=env, start_new_session=True)
            log.info("started %s on %s", ", ".join(procs), redact(url))
            return _supervise(cfg, url, procs, shutdown, args.duration, args.drain)
        finally:
            _kill(procs.values())  # never leave orphans behind, whatever happened above


def _supervise(
    cfg: StackConfig,
    url: str,
    procs: dict[str, subprocess.Popen[bytes]],
    shutdown: Shutdown,
    duration: float | None,
    drain: float,
) -> int:
    deadline = time.monotonic() + duration if duration else float("inf")
    failed = ""
    while not shutdown.is_set() and time.monotonic() < deadline:
        crashed = [n for n, p in procs.items() if not n.startswith("ingest") and p.poll() is not None]
        if crashed:
            failed = f"{', '.join(crashed)} exited unexpectedly"
            log.error("%s: stopping the stack", failed)
            break
        shutdown.wait(0.5)
    _stop([p for n, p in procs.items() if n.startswith("ingest")], 10.0)
    end = time.monotonic() + drain
    client = connect(url, cfg.redis.model_copy(update={"retries": 1}))
    while not failed and time.monotonic() < end:
        try:
            left = backlog(cfg, client)
        except TRANSIENT_ERRORS as exc:
            log.error("cannot see the queues (%s): stopping without draining", exc)
            break
        if not left:
            break
        log.info("draining: %d entries still queued", left)
        time.sleep(1.0)
    client.close()
    _stop([p for n, p in procs.items() if not n.startswith("ingest")], 15.0)
    bad = {n: p.returncode for n, p in procs.items() if p.returncode not in (0, -signal.SIGTERM)}
    if bad:
        log.error("exit codes: %s", bad)
    return 1 if failed or bad else 0


def _kill(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def _stop(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
