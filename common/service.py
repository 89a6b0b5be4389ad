"""What every service's command line shares: arguments, config errors, logging, signals and bounded runs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Generic, TypeVar

from common import metrics
from common.backoff import Backoff, Stop
from common.config import ConfigError, StackConfig, load_config
from common.embedded import redis_url
from common.redact import redact
from common.redis_io import Client, Denied, RedisIOError, Unavailable, connect, ping
from common.redis_io.settings import RedisConfig
from common.workers import Worker

log = logging.getLogger(__name__)

EXIT_CONFIG = 2


class Shutdown:
    """The first SIGINT/SIGTERM asks the worker to drain; a second one, or the drain deadline, exits at once."""

    def __init__(self, drain_s: float = 10.0, on_exit: Callable[[], None] | None = None) -> None:
        self.drain_s = drain_s
        self.on_exit = on_exit
        """Called before a forced exit (the launcher kills its children there)."""
        self._event = threading.Event()

    def install(self) -> Shutdown:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._event.is_set():
            log.warning("%s again: exiting now", name)
            self._exit(signum)
        log.info("%s: draining (at most %.0f s; send it again to exit now)", name, self.drain_s)
        self.request()
        Worker("drain-deadline", lambda: self._deadline(signum)).start()

    def _deadline(self, signum: int) -> None:
        time.sleep(self.drain_s)
        log.error("drain took longer than %.0f s: exiting", self.drain_s)
        self._exit(signum)

    def _exit(self, signum: int) -> None:
        if self.on_exit is not None:
            self.on_exit()
        logging.shutdown()
        os._exit(128 + signum)

    def request(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


@dataclass
class Bounds:
    """Bounded mode, so tests run the real loop to completion: stop after a count, a duration, or idleness."""

    max_frames: int | None = None
    duration_s: float | None = None
    until_idle_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    done: int = 0

    def count(self, n: int) -> None:
        self.done += n
        if n:
            self.last_activity = time.monotonic()

    def restart(self) -> None:
        """Start the clocks now (after a slow start-up such as loading a model)."""
        self.started = self.last_activity = time.monotonic()

    def reached(self) -> str | None:
        """Why the run is over, or None."""
        now = time.monotonic()
        if self.max_frames is not None and self.done >= self.max_frames:
            return f"max-frames {self.max_frames} reached"
        if self.duration_s is not None and now - self.started >= self.duration_s:
            return f"duration {self.duration_s:g} s reached"
        if self.until_idle_s is not None and now - self.last_activity >= self.until_idle_s:
            return f"idle for {self.until_idle_s:g} s"
        return None


OptionsT = TypeVar("OptionsT")


class UsageError(ValueError):
    """Command-line options that cannot run with this config; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Context(Generic[OptionsT]):
    """What a service's run function gets: the config, its own typed options, and the shared machinery."""

    config: StackConfig
    options: OptionsT
    """The service's options (e.g. which pool and replica), checked against the config."""
    config_path: Path
    redis_url: str
    shutdown: Shutdown
    bounds: Bounds
    heartbeat: Heartbeat | None = None

    def stop_reason(self) -> str | None:
        """Why the worker loop must end now (a signal, or a bound reached), or None to go on."""
        if self.heartbeat is not None:
            self.heartbeat.beat()  # every loop asks this each turn: asking is a sign of life
        return "signal" if self.shutdown.is_set() else self.bounds.reached()


@dataclass
class Heartbeat:
    """A file whose modification time says the worker loop turned recently (``python -m common.stack.health`` reads it:
    a container's healthcheck)."""

    path: Path
    every_s: float = 1.0
    _last: float | None = None  # not 0.0: the monotonic clock may start near 0 (a host up for less than every_s)

    def beat(self) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last >= self.every_s:
            self._last = now
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, service, pid, logger, message, and the traceback."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "service": self.service, "pid": record.process, "logger": record.name,
            "message": record.getMessage(),
        }  # fmt: skip
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


Options = Callable[[StackConfig, argparse.Namespace], OptionsT]
"""Turns the parsed command line into a service's typed options, or raises :class:`UsageError` saying why not."""


def choose(names: list[str], chosen: str | None, section: str, flag: str) -> str:
    """Pick the configured item a process serves: the one named by ``flag``, or the only one; raises
    :class:`UsageError` saying what to do."""
    if not names:
        raise UsageError([f"{section} is empty: configure at least one"])
    if chosen is None:
        if len(names) > 1:
            raise UsageError([f"{section} has several ({', '.join(names)}): choose one with {flag}"])
        return names[0]
    if chosen not in names:
        raise UsageError([f"{flag} {chosen}: not in {section} ({', '.join(names)})"])
    return chosen


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", type=Path, required=True, help="stack config (YAML)")
    p.add_argument("--check-config", action="store_true", help="validate the config and exit (0 valid, 2 not)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--until-idle", type=float, metavar="S", help="stop once nothing arrived for S seconds")
    p.add_argument("--drain", type=float, default=10.0, metavar="S", help="longest drain on shutdown (10)")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING...")
    p.add_argument(
        "--log-format", choices=["text", "json"], default=os.environ.get("LOG_FORMAT", "text"),
        help="text lines, or one JSON object a line for a log collector (env LOG_FORMAT)",
    )  # fmt: skip
    p.add_argument(
        "--health-file", type=Path, default=os.environ.get("STREAMYOLO_HEALTH_FILE") or None, metavar="FILE",
        help="touch FILE every second while the loop runs, for a healthcheck (env STREAMYOLO_HEALTH_FILE)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-port", type=int, default=int(os.environ.get("STREAMYOLO_METRICS_PORT") or 0), metavar="PORT",
        help="serve Prometheus metrics on PORT (env STREAMYOLO_METRICS_PORT; 0: none)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-host", default=os.environ.get("STREAMYOLO_METRICS_HOST", "127.0.0.1"), metavar="HOST",
        help="address the metrics are served on (127.0.0.1; 0.0.0.0 in a container)",
    )  # fmt: skip
    return p


def redis_refusal(url: str, cfg: RedisConfig, stop: Stop | None = None) -> str | None:
    """Why the server turns this client away for good (credentials, ACL, TLS), or None: it answered, or cannot be
    reached now (outages are the worker loops' to retry). One attempt, so that a wrong password stops the start at
    once, saying so, instead of being retried as an outage forever. A cluster's client asks for the slot map as it
    is made, so a cluster not reachable yet (one starting with the stack) is waited for here, on ``stop``, rather
    than ending the start; without ``stop`` that is an outage, None."""
    for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(cfg, name)
        if path is not None and not path.is_file():
            return f"redis.{name}: no such file: {path}"
    where = redact(url)
    client: Client | None = None
    backoff = Backoff(0.2, 5.0)
    try:
        while client is None:
            try:
                client = connect(url, cfg.model_copy(update={"retries": 0}))
            except Unavailable as exc:
                if stop is None or _tls_failure(exc):
                    raise
                delay = backoff.next_delay()
                log.warning("redis cluster at %s not reachable (%s): trying again in %.1f s", where, exc, delay)
                if backoff.wait(stop, delay):
                    return None
        ping(client)
    except Denied as exc:
        return f"{where} refused this client: {exc} (check the user and password in redis.url or REDIS_URL, the ACL)"
    except RedisIOError as exc:
        if _tls_failure(exc):  # a certificate refused by either side: retrying cannot help
            return f"TLS with {where} failed: {exc} (check redis.tls_ca_file, tls_cert_file and tls_key_file)"
    finally:
        if client is not None:
            client.close()
    return None


def _tls_failure(exc: BaseException) -> bool:
    """Whether an SSL error (a certificate refused, a handshake ended) is among the causes of ``exc``."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    return cause is not None


def main(
    prog: str, arg_parser: argparse.ArgumentParser, run: Callable[[Context[OptionsT]], int], options: Options[OptionsT]
) -> int:
    """Parse, load and check the config and the service's options, and that Redis takes this client's credentials
    and certificates (exit 2 on errors), then run with signals installed."""
    args = arg_parser.parse_args()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(prog) if args.log_format == "json"
        else logging.Formatter(f"%(asctime)s {prog}[%(process)d] %(levelname)s %(name)s: %(message)s")
    )  # fmt: skip
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        chosen = options(config, args)
    except UsageError as exc:
        for line in exc.problems:
            print(f"config error: {args.config}: {line}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"{args.config}: OK")
        return 0
    shutdown = Shutdown(drain_s=args.drain).install()
    bounds = Bounds(max_frames=args.max_frames, duration_s=args.duration, until_idle_s=args.until_idle)
    with redis_url(config) as url:
        refusal = redis_refusal(url, config.redis, shutdown)
        if refusal is not None:
            log.error("%s", refusal)
            return EXIT_CONFIG
        if shutdown.is_set():  # stopped while waiting for the cluster to answer
            return 0
        heartbeat = Heartbeat(args.health_file) if args.health_file else None
        try:
            metrics.serve(args.metrics_port, args.metrics_host)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%d: %s (choose another --metrics-port)", args.metrics_host,
                      args.metrics_port, exc)  # fmt: skip
            return EXIT_CONFIG
        return run(Context(config, chosen, args.config, url, shutdown, bounds, heartbeat))
