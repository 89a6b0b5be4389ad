"""Run the whole stack locally without Docker: the embedded server, ingest, every detector replica, every sink.

``streamyolo --config compose/local.yaml [--duration S]``. Ctrl-C (or the duration) stops ingest first, lets the
detectors and sinks finish what is already queued (up to ``--drain`` seconds), then stops them; a second Ctrl-C
stops everything at once. When every camera is a recording that ends (a file or image folder without ``loop``),
the stack stops by itself once ingest has read them all and every frame is answered and stored.

``streamyolo detect ...`` is TrainYourOwnYOLO's ``Detector.py`` on this stack (``detector/detect.py``, registered
as a command in pyproject.toml).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path

from common.config import ENV_PREFIX, ConfigError, StackConfig, load_config
from common.embedded import redis_url
from common.keys import matches
from common.redact import redact
from common.redis_io import Client, RedisIOError, connect, outstanding, stream_keys
from common.service import EXIT_CONFIG, Shutdown
from common.settings import ConsumerConfig, events_of

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


def environments(cfg: StackConfig) -> dict[str, dict[str, str]]:
    """What a process's environment adds, by display name: each replica of a pool with ``gpus`` its own GPU."""
    return {
        f"detector-{pool.name}-{r}": {
            f"{ENV_PREFIX}DETECTOR__POOLS__{pool.name.upper()}__ENGINE__GPU": str(pool.gpus[r % len(pool.gpus)])
        }
        for pool in cfg.detector.pools
        if pool.gpus
        for r in range(pool.replicas)
    }


def backlog(cfg: StackConfig, client: Client) -> int:
    """Entries some configured pool or sink has not finished: never delivered (lag) or not yet acked (pending).

    A group that does not exist yet on a stream (its reader has not discovered the stream) owes every entry."""
    keys = cfg.keys
    consumers = [s for s in cfg.sinks if isinstance(s, ConsumerConfig)]  # a web view has no group: nobody waits on it
    stages = [
        (keys.stage("frames"), {keys.detector_group(p.name): p.streams for p in cfg.detector.pools}),
        (keys.stage("results"), {keys.sink_group(s.name): s.streams for s in consumers if events_of(s) is None}),
    ]
    for tracker in sorted({t for s in consumers if (t := events_of(s)) is not None}):
        readers = {keys.sink_group(s.name): s.streams for s in consumers if events_of(s) == tracker}
        stages.append((keys.stage("events", tracker), readers))
    total = 0
    for stage, groups in stages:
        for key in stream_keys(client, stage, ["*"]):
            name = stage.name(key) or ""
            total += outstanding(client, key, [g for g, streams in groups.items() if matches(name, streams)])
    return total


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = subcommand(argv[0]) if argv and not argv[0].startswith("-") else None
    if command is not None:
        return command(argv[1:])
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
    return run_stack(cfg, args.config, args.duration, args.drain)


COMMANDS = "streamyolo.commands"
"""Entry-point group of ``streamyolo NAME`` commands: each lives with the part it belongs to (``detect``: the
detector) and registers itself in pyproject.toml, so the launcher imports none of them."""


def subcommand(name: str) -> Callable[[list[str]], int] | None:
    """The installed command ``streamyolo NAME``, or None."""
    found = [e for e in entry_points(group=COMMANDS) if e.name == name]
    command: Callable[[list[str]], int] | None = found[0].load() if found else None
    return command


OnUrl = Callable[[str], None]


def run_stack(
    cfg: StackConfig, config: Path, duration: float | None = None, drain: float = 30.0, on_url: OnUrl | None = None
) -> int:
    """Start every process of the stack ``config`` describes (and an embedded server if it names none), supervise
    them until a stop, the duration, or the end of every recording, drain, stop; 0 when all went well.
    ``on_url`` is called with the server's URL while the stack still runs, after it drained (the queues empty)."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    shutdown = Shutdown(drain_s=drain + 30, on_exit=lambda: _kill(procs.values())).install()
    with redis_url(cfg) as url:
        env = {**os.environ, "REDIS_URL": url}
        try:
            extra = environments(cfg)
            for name, cmd in commands(cfg, config).items():
                # Own sessions: a terminal's Ctrl-C reaches only the launcher, which stops the stack in order.
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", *cmd], env={**env, **extra.get(name, {})}, start_new_session=True
                )
            log.info("started %s on %s", ", ".join(procs), redact(url))
            for sink in cfg.sinks:  # the web views' addresses, to open in a browser
                if sink.kind == "web":
                    log.info(
                        "web view %s: http://%s:%s/", sink.name, getattr(sink, "host", "?"), getattr(sink, "port", "?")
                    )
            code = _supervise(cfg, url, procs, shutdown, duration, drain)
            if on_url is not None:
                on_url(url)
            return code
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
    failed, ended = "", False
    ingest = {n: p for n, p in procs.items() if n.startswith("ingest")}
    while not shutdown.is_set() and time.monotonic() < deadline:
        # Only ingest may end by itself (every source read), and only cleanly.
        crashed = [n for n, p in procs.items() if (code := p.poll()) is not None and (code != 0 or n not in ingest)]
        if crashed:
            failed = f"{', '.join(crashed)} exited unexpectedly"
            log.error("%s: stopping the stack", failed)
            break
        if ingest and all(p.poll() == 0 for p in ingest.values()):
            ended = True  # every camera was a recording, and each has been read to its end
            log.info("every recording has been read: stopping once every frame is answered and stored")
            break
        shutdown.wait(0.5)
    _stop(list(ingest.values()), 10.0)
    others = [p for n, p in procs.items() if n not in ingest]
    failed = failed or _drain(cfg, url, shutdown, drain, ended, lambda: all(p.poll() is None for p in others))
    _stop(others, 15.0)
    bad = {n: p.returncode for n, p in procs.items() if p.returncode not in (0, -signal.SIGTERM)}
    if bad:
        log.error("exit codes: %s", bad)
    return 1 if failed or bad else 0


STARTUP_S = 300.0
"""After the recordings ended: how long the queues may stand still before the first frame is answered (a detector
may still be loading its model, compiling, capturing graphs)."""


def _drain(cfg: StackConfig, url: str, shutdown: Shutdown, drain: float, ended: bool, alive: Callable[[], bool]) -> str:
    """Wait until nothing is queued: at most ``drain`` seconds after a stop; after the recordings ended, for as long
    as the backlog keeps shrinking (they have no deadline), giving up after ``drain`` seconds without progress.
    Returns why it gave up, or an empty string."""
    client = connect(url, cfg.redis.model_copy(update={"retries": 1}))
    end = time.monotonic() + (max(drain, STARTUP_S) if ended else drain)
    least = None
    why = ""
    while time.monotonic() < end and not (ended and shutdown.is_set()):
        if not alive():
            why = "a detector or sink exited while frames were queued"
            log.error("%s: stopping", why)
            break
        try:
            left = backlog(cfg, client)
        except RedisIOError as exc:  # unreachable, or an ACL without XINFO
            why = f"cannot see the queues ({exc})"
            log.error("%s: stopping without draining", why)
            break
        if not left:
            break
        if ended and least is not None and left < least:
            end = time.monotonic() + drain  # progress: the recordings' frames are still being answered
        least = left if least is None else min(least, left)
        log.info("draining: %d entries still queued", left)
        time.sleep(1.0)
    else:
        if ended:
            why = "the detectors or sinks stopped making progress" if not shutdown.is_set() else "stopped"
            log.error("%s: stopping with frames unanswered", why)
    client.close()
    return why


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
