"""What every service's command line shares: arguments, config errors, logging, signals and bounded runs."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from common.config import ConfigError, StackConfig, load_config
from common.embedded import redis_url

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
        threading.Thread(target=self._deadline, args=(signum,), daemon=True).start()

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


@dataclass
class Context:
    """What a service's run function gets."""

    config: StackConfig
    args: argparse.Namespace
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
    """A file whose modification time says the worker loop turned recently (``python -m common.health`` reads it:
    a container's healthcheck)."""

    path: Path
    every_s: float = 1.0
    _last: float = 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()


Run = Callable[[Context], int]
Check = Callable[[StackConfig, argparse.Namespace], list[str]]


def choose(names: list[str], chosen: str | None, section: str, flag: str) -> tuple[str | None, list[str]]:
    """Pick the configured item a process serves: the one named by ``flag``, or the only one."""
    if not names:
        return None, [f"{section} is empty: configure at least one"]
    if chosen is None:
        if len(names) > 1:
            return None, [f"{section} has several ({', '.join(names)}): choose one with {flag}"]
        return names[0], []
    if chosen not in names:
        return None, [f"{flag} {chosen}: not in {section} ({', '.join(names)})"]
    return chosen, []


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
        "--health-file", type=Path, default=os.environ.get("STREAMYOLO_HEALTH_FILE") or None, metavar="FILE",
        help="touch FILE every second while the loop runs, for a healthcheck (env STREAMYOLO_HEALTH_FILE)",
    )  # fmt: skip
    return p


def main(prog: str, arg_parser: argparse.ArgumentParser, run: Run, check: Check | None = None) -> int:
    """Parse, load and check the config (exit 2 on errors), then run with signals installed."""
    args = arg_parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {prog}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    problems = check(config, args) if check else []
    for line in problems:
        print(f"config error: {args.config}: {line}", file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    if args.check_config:
        print(f"{args.config}: OK")
        return 0
    shutdown = Shutdown(drain_s=args.drain).install()
    bounds = Bounds(max_frames=args.max_frames, duration_s=args.duration, until_idle_s=args.until_idle)
    with redis_url(config) as url:
        heartbeat = Heartbeat(args.health_file) if args.health_file else None
        return run(Context(config, args, url, shutdown, bounds, heartbeat))
