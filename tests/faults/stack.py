"""What the fault cases share: the stack's real processes with their logs in files, and the ledger.

The ledger is what every case is checked against: each frame ingest pushed ends with exactly one result, or is
counted as stale (the detector group's tally in Redis) or dead-lettered (with its reason), and nothing else; a
frame answered twice must be a counted re-delivery.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from common.keys import Keys
from common.redis_io import Client, text
from common.wire import Frame, Result, WireError, decode
from tests.conftest import ROOT

TINY = {"architecture": "tiny", "classes": ["circle", "square", "triangle"], "input_size": 128}


def camera(name: str, seed: int, fps: float, width: int = 320, height: int = 240, **source: Any) -> dict[str, Any]:
    return {"name": name, "source": {"kind": "synthetic", "seed": seed, "width": width, "height": height,
                                     "fps": fps, **source}}  # fmt: skip


def write_config(path: Path, prefix: str, cameras: list[dict[str, Any]], pool: dict[str, Any],
                 sinks: list[dict[str, Any]], streams: dict[str, Any] | None = None,
                 redis_cfg: dict[str, Any] | None = None, ingest: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """A stack config: the cameras, one detector pool named main (tiny model on the CPU unless ``pool`` says
    otherwise), the sinks; short blocking and rescans so that faults show quickly. The faults are about delivery:
    every frame gets a result however late (no shedding) unless ``pool`` says otherwise (test_overload does)."""
    main = {"name": "main", "model": TINY, "engine": {"kind": "torch", "gpu": None}, "max_batch": 4,
            "max_wait_ms": 30, "block_ms": 300, "claim_idle_ms": 1500, "rescan_s": 0.5, "shed_behind": None,
            **pool}  # fmt: skip
    config = {
        "redis": {"socket_timeout_s": 5, **(redis_cfg or {})},
        "streams": {"prefix": prefix, "frames_maxlen": 100_000, "results_maxlen": 100_000, **(streams or {})},
        "ingest": {"cameras": cameras, **(ingest or {})},
        "detector": {"pools": [main]},
        "sinks": [{"block_ms": 300, "rescan_s": 0.5, **s} for s in sinks],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Procs:
    """The stack's processes, each writing its log to a file (a pipe nobody reads would stall a chatty process)."""

    folder: Path
    config: Path
    url: str
    env: dict[str, str] = field(default_factory=dict)
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, module: str, *args: str, url: str | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "REDIS_URL": url or self.url, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path(name), "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--config", str(self.config), *args],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.running[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(self, name: str, timeout: float) -> int:
        """The process's exit status; fails the test, with its log, when it is still running after ``timeout``."""
        try:
            return self.running[name].wait(timeout)
        except subprocess.TimeoutExpired:
            self.running[name].kill()
            raise AssertionError(f"{name} still running after {timeout:.0f} s:\n{self.tail(name)}") from None

    def kill(self, name: str) -> None:
        self.running[name].send_signal(signal.SIGKILL)
        self.running[name].wait(10)

    def tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(self.log(name).splitlines()[-lines:])

    def close(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@contextmanager
def processes(folder: Path, config: Path, url: str, **env: str) -> Iterator[Procs]:
    procs = Procs(folder, config, url, env)
    try:
        yield procs
    finally:
        procs.close()


def pending_of(client: Client, keys: list[str], group: str, consumer: str) -> dict[str, list[str]]:
    """The entry ids a consumer holds (read, not yet acked) in ``group``, per stream key."""
    out = {}
    for key in keys:
        held: Any = client.xpending_range(key, group, "-", "+", 1000, consumername=consumer)
        out[key] = [text(r["message_id"]) for r in held]
    return out


def still_pending(client: Client, group: str, held: dict[str, list[str]]) -> int:
    """How many of the entries ``held`` (per stream key) are still pending in ``group``."""
    pipe = client.pipeline(transaction=False)
    for key, ids in held.items():
        for entry_id in ids:
            pipe.xpending_range(key, group, entry_id, entry_id, 1)
    return sum(1 for rows in pipe.execute() if rows)


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.1) -> float:
    """Seconds until ``check()`` held; fails the test when it did not within ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic() - start


# ------------------------------------------------------------------------------------------------- the ledger
def published(ingest_log: str) -> dict[str, int]:
    """Frames pushed to Redis per camera, from ingest's last counter line for each (at its stop)."""
    counts: dict[str, int] = {}
    for name, count in re.findall(r"camera ([\w.\-]+): read \d+, sampled \d+, published (\d+)", ingest_log):
        counts[name] = int(count)
    return counts


def redeliveries(detector_logs: list[str]) -> int:
    """Entries the detectors got again (their own pending after a restart, or claimed from a dead replica)."""
    total = 0
    for log in detector_logs:
        stats = re.findall(r"redelivered=(\d+), claimed=(\d+)", log)
        if stats:
            total += int(stats[-1][0]) + int(stats[-1][1])
    return total


@dataclass
class StreamLedger:
    pushed: int
    """Frames ingest counted as pushed."""
    kept: int = 0
    """Frames the frames stream holds (the tests' caps keep them all): must equal ``pushed``."""
    answered: int = 0
    """Pushed frames (distinct seq) with a result on the results stream."""
    duplicates: int = 0
    stale: int = 0
    shed: int = 0
    """Live frames shed because newer ones of their stream waited (the pool's shed_behind)."""
    dead: int = 0
    pending: int = 0
    lag: int | None = 0
    unknown: int = 0
    """Results for frames that were never pushed (must be 0)."""

    @property
    def missing(self) -> int:
        """Pushed frames that ended in none of the four ways."""
        return self.pushed - self.answered - self.stale - self.shed - self.dead


def ledger(client: Client, prefix: str | Keys, pushed: dict[str, int], pool: str = "main") -> dict[str, StreamLedger]:
    """The ledger of every stream, from ingest's counts and what Redis holds (frames, results, the stale and shed
    tallies, dead letters, the detector group's pending and lag). ``prefix``: a cluster's needs its Keys."""
    keys = prefix if isinstance(prefix, Keys) else Keys(prefix)
    group = keys.detector_group(pool)
    stale = {text(k): int(v) for t in keys.tallies("stale", group) for k, v in client.hgetall(t).items()}
    shed = {text(k): int(v) for t in keys.tallies("shed", group) for k, v in client.hgetall(t).items()}
    dead_keys = {keys.dead_letters(keys.frames(s)) for s in pushed}  # one per shard on a cluster
    dead = Counter(keys.stream_of(text(f[b"origin"])) for k in dead_keys for _, f in client.xrange(k) if b"origin" in f)
    out: dict[str, StreamLedger] = {}
    for stream, count in pushed.items():
        frames: Any = client.xrange(keys.frames(stream))
        results: Any = client.xrange(keys.results(stream))
        kept = {_seq(f) for _, f in frames}
        seqs = Counter(decode(f[b"msg"], Result).seq for _, f in results)
        info = {text(g["name"]): g for g in client.xinfo_groups(keys.frames(stream))}.get(group, {})
        out[stream] = StreamLedger(
            pushed=count, kept=len(kept), answered=len(kept & set(seqs)), duplicates=sum(seqs.values()) - len(seqs),
            stale=stale.get(stream, 0), shed=shed.get(stream, 0), dead=dead.get(stream, 0),
            pending=int(info.get("pending", 0)), lag=info.get("lag"), unknown=len(set(seqs) - kept),
        )  # fmt: skip
    return out


def _seq(fields: dict[bytes, bytes]) -> int | None:
    """A frame entry's seq; None for an entry that is not a frame (poison)."""
    try:
        return decode(fields.get(b"msg"), Frame).seq
    except WireError:
        return None


def problems(book: dict[str, StreamLedger], redelivered: int) -> list[str]:
    """Everything wrong with a ledger: frames missing or unknown, work left pending or unread, unexplained
    duplicates."""
    out = [f"{s}: {v.missing} frames missing ({v})" for s, v in book.items() if v.missing]
    out += [f"{s}: the stream holds {v.kept} frames, {v.pushed} pushed" for s, v in book.items() if v.kept != v.pushed]
    out += [f"{s}: {v.unknown} results for frames never pushed" for s, v in book.items() if v.unknown]
    out += [f"{s}: {v.pending} pending, lag {v.lag}" for s, v in book.items() if v.pending or v.lag]
    duplicates = sum(v.duplicates for v in book.values())
    if duplicates > redelivered:
        out.append(f"{duplicates} duplicate results but only {redelivered} counted re-deliveries")
    return out


def totals(book: dict[str, StreamLedger]) -> dict[str, int]:
    fields = ("pushed", "kept", "answered", "duplicates", "stale", "shed", "dead", "missing")
    return {f: sum(getattr(v, f) for v in book.values()) for f in fields}


# ------------------------------------------------------------------------------------------- logs and timing
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def logged_at(log: str, pattern: str) -> list[float]:
    """UNIX times of the log lines matching ``pattern`` (a regex), read from their timestamps (local time, ms)."""
    out = []
    for line in log.splitlines():
        stamp = _LOG_TIME.match(line)
        if stamp and re.search(pattern, line):
            out.append(datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The results a jsonl sink stored, one dict a line (none before the file exists)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def stored(path: Path) -> set[tuple[str, int]]:
    """(stream, seq) of every result a jsonl sink stored."""
    return {(r["stream"], r["seq"]) for r in jsonl_rows(path)}


def dropped(ingest_log: str) -> int:
    """Frames ingest dropped (counted) because Redis refused or could not take them, from its last counter line
    per camera."""
    last = dict(re.findall(r"camera ([\w.\-]+): read \d+, sampled \d+, published \d+, dropped (\d+)", ingest_log))
    return sum(map(int, last.values()))


def server_ms(client: Client) -> int:
    """The server's clock in milliseconds, the unit of stream entry ids."""
    now: Any = client.time()
    return int(now[0]) * 1000 + int(now[1]) // 1000


def added_since(client: Client, key: str, since_ms: int) -> bool:
    """The stream's newest entry was added at or after ``since_ms`` (server clock: entry ids are milliseconds)."""
    last: Any = client.xrevrange(key, count=1)
    return bool(last) and int(text(last[0][0]).split("-")[0]) >= since_ms


def finished(procs: Procs, *names: str, timeout: float = 120) -> None:
    """Each of them must end by itself (a bounded run) with exit 0."""
    for name in names:
        assert procs.wait(name, timeout) == 0, f"{name} failed:\n{procs.tail(name)}"


def terminate(procs: Procs, *names: str, timeout: float = 30) -> None:
    """SIGTERM each of them; each must drain and exit 0."""
    for name in names:
        procs.running[name].send_signal(signal.SIGTERM)
    finished(procs, *names, timeout=timeout)


def settle(client: Client, prefix: str | Keys, procs: Procs, stored: Callable[[], int], timeout: float = 60) -> None:
    """Wait, at most ``timeout``, until the ledger of what ingest pushed (read from its log: call it once ingest
    has stopped) shows no problem and the sink stored every result (``stored()``: how many it holds); what is
    still wrong then shows in the test's own ledger assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pushed = published(procs.log("ingest"))
        keys = prefix if isinstance(prefix, Keys) else Keys(prefix)
        results = sum(client.xlen(keys.results(s)) for s in pushed)
        detectors = [procs.log(n) for n in procs.running if n.startswith("detector")]
        if not problems(ledger(client, prefix, pushed), redeliveries(detectors)) and stored() >= results:
            return
        time.sleep(1.0)  # a ledger reads every frame back: not too often
