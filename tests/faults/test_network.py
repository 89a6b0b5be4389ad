"""The network to Redis cut (silent: nothing answers), cut one way (requests go through, replies are lost) or reset
(connections refused), under flow, through a proxy.

Every service (ingest with synthetic cameras, a detector replica, a jsonl sink) reaches Redis only through
:class:`tests.faults.proxy.Proxy`. Checked: no call waits past its socket timeout (each service logs the outage
within one timeout, and again at least every timeout while it lasts), everything resumes after the restore, the
processes still drain and exit cleanly, and the ledger holds: each frame ingest counted as pushed has exactly one
result (frames ingest dropped while Redis was unreachable are counted as dropped, not pushed). The one-way cut is
the hard case for the ledger: every call is executed with its reply lost, so a read hands entries to a consumer
that never sees them, a transaction retried would publish twice, and ingest cannot know which frames went.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from common.embedded import EmbeddedServer
from common.keys import Keys
from common.redis_io import Client, connect
from common.redis_io.settings import RedisConfig
from tests.faults.conftest import Record
from tests.faults.proxy import Proxy
from tests.faults.stack import (
    Procs,
    added_since,
    camera,
    dropped,
    jsonl_rows,
    ledger,
    logged_at,
    problems,
    processes,
    published,
    redeliveries,
    server_ms,
    settle,
    stored,
    terminate,
    totals,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "net"
KEYS = Keys(PREFIX)
STREAMS = ["a", "b", "c"]
SOCKET_TIMEOUT_S = 3.0
SLACK_S = 1.5
"""Log timestamps against the test's clock on a loaded 2-core machine."""
BACKOFF_S = 1.0
"""The longest pause GroupReader takes between attempts (reads, and writes in _execute)."""
RETRY_BUDGET_S = sum(min(2.0, 0.05 * 2**n) for n in range(1, RedisConfig().retries + 1))
"""How long a call keeps retrying refused connections: connect()'s backoff over redis.retries (default 6)."""
ERRORS = {
    "ingest": r"redis unreachable",
    "detector": r"redis unavailable|redis write failed",
    "sink": r"redis unavailable|redis write failed",
}
"""What each service logs when a Redis call fails (ingest's publisher; GroupReader's reads and writes)."""


def stack_config(tmp_path: Path) -> Path:
    cams = [camera(name, seed, fps=8) for seed, name in enumerate(STREAMS)]
    # claim_idle_ms as the harness sets the pool's: entries lost in a reply come back after it (default 30 s).
    sink = {"kind": "jsonl", "name": "out", "path": str(tmp_path / "results.jsonl"), "claim_idle_ms": 1500}
    return write_config(tmp_path / "stack.yaml", PREFIX, cams, {"max_age_ms": None}, [sink],
                        redis_cfg={"socket_timeout_s": SOCKET_TIMEOUT_S})  # fmt: skip


def test_a_call_on_a_silent_network_gives_up_after_one_socket_timeout(tmp_path: Path) -> None:
    # redis-py's Retry retries timeouts by default: a client that did so would wait (retries + 1) timeouts.
    with EmbeddedServer(tmp_path / "r.sock") as server, Proxy(server.socket_path) as proxy:
        client = connect(proxy.url(), RedisConfig(socket_timeout_s=1, retries=6))
        assert client.ping()
        proxy.cut()
        start = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        waited = time.monotonic() - start
        proxy.restore()
        assert client.ping()  # and the client is usable again, on a new connection
        client.close()
    assert waited < 1.8


# A silent cut; replies lost one way (requests run, answers vanish: nothing may be lost or doubled); refused
# connections, which are retried inside each call (redis.retries): a call fails after that budget.
@pytest.mark.parametrize(("fault", "call_s"), [("cut", SOCKET_TIMEOUT_S), ("replies", SOCKET_TIMEOUT_S),
                                               ("reset", RETRY_BUDGET_S)])  # fmt: skip
def test_a_network_fault_makes_no_call_hang_and_everything_resumes(
    tmp_path: Path, record: Record, fault: str, call_s: float
) -> None:
    """The stack under flow through a proxy; ``fault`` for 8 s, then restored. ``call_s``: the longest a Redis
    call may take to fail under this fault."""
    down_s = 8.0
    config, results = stack_config(tmp_path), tmp_path / "results.jsonl"
    with EmbeddedServer(tmp_path / "r.sock") as server, Proxy(server.socket_path) as proxy, \
            processes(tmp_path, config, proxy.url()) as procs:  # fmt: skip
        client = connect(server.url)  # the test's own view of Redis, around the proxy
        procs.start("detector", "detector", "--replica", "main-0")
        procs.start("sink", "sink")
        procs.start("ingest", "ingest")
        # Faults strike a stack in its steady state: the detector idle in a blocking read between frames.
        wait_for(
            "results flowing, the backlog gone",
            lambda: len(stored(results)) > 30 and caught_up(client),
            90,
        )
        down_at = time.time()
        {"cut": proxy.cut, "replies": lambda: proxy.cut(replies_only=True), "reset": proxy.reset}[fault]()
        time.sleep(down_s)
        up_at = time.time()
        proxy.restore()
        resumed = resume_times(client, tmp_path)
        time.sleep(2)  # flow after the restore, then the ledger
        terminate(procs, "ingest")
        settle(client, PREFIX, procs, lambda: len(stored(results)))
        terminate(procs, "detector", "sink")
        book = ledger(client, PREFIX, published(procs.log("ingest")))
        client.close()

    assert problems(book, redeliveries([procs.log("detector")])) == []
    assert len(stored(results)) == totals(book)["answered"]  # the sink stored every result once
    first, longest = silences(procs, down_at, up_at)
    assert all(s <= call_s + SLACK_S for s in first.values()), f"first error after the {fault}: {first}"
    assert all(s <= call_s + BACKOFF_S + SLACK_S for s in longest.values()), f"longest silence: {longest}"
    # A call under way at the restore ends within call_s, then a back-off (ingest's publisher: up to 2 s).
    assert max(resumed.values()) <= call_s + 2.0 + SLACK_S, resumed
    record(fault=fault, down_s=down_s, frames=totals(book), first_error_s=first, longest_silence_s=longest,
           resume_s=resumed, dropped_by_ingest=dropped(procs.log("ingest")), connections=proxy.accepted,
           claimed_back=claimed(procs))  # fmt: skip


def caught_up(client: Client) -> bool:
    """The detector group has read every frame (lag 0) and holds at most a batch."""
    groups: list[Any] = [client.xinfo_groups(KEYS.frames(s)) for s in STREAMS]
    return all(g and g[0]["lag"] == 0 and g[0]["pending"] <= 4 for g in groups)


def resume_times(client: Client, tmp_path: Path) -> dict[str, float]:
    """Seconds from the restore (now) until ingest pushed a frame, the detector published a result and the sink
    stored the result of a frame pushed since."""
    start = time.monotonic()
    since_ms = server_ms(client)
    checks = {
        "ingest": lambda: any(added_since(client, KEYS.frames(s), since_ms) for s in STREAMS),
        "detector": lambda: any(added_since(client, KEYS.results(s), since_ms) for s in STREAMS),
        "sink": lambda: any(
            int(r["frame_id"].split("-")[0]) >= since_ms for r in jsonl_rows(tmp_path / "results.jsonl")
        ),
    }
    out = {}
    for name, check in checks.items():
        wait_for(f"{name} working again", check, 30)
        out[name] = round(time.monotonic() - start, 2)
    return out


def silences(procs: Procs, down_at: float, up_at: float) -> tuple[dict[str, float], dict[str, float]]:
    """Per service: seconds from the fault to its first logged Redis error, and the longest stretch without one
    while the fault lasted (a call hanging past its timeout shows as a long silence)."""
    first, longest = {}, {}
    for name, pattern in ERRORS.items():
        times = [t for t in logged_at(procs.log(name), pattern) if t >= down_at]
        assert times, f"{name} logged no redis error after the fault:\n{procs.tail(name)}"
        first[name] = round(times[0] - down_at, 2)
        during = [down_at, *[t for t in times if t <= up_at], up_at]
        longest[name] = round(max(b - a for a, b in itertools.pairwise(during)), 2)
    # ingest's publisher warns once per 5 s at most: its first error is what tells.
    longest.pop("ingest")
    return first, longest


def claimed(procs: Procs) -> dict[str, int]:
    """Entries each consumer claimed: with one consumer of each group, those a lost reply had delivered to it."""
    return {n: sum(map(int, re.findall(r"claimed (\d+) idle entries", procs.log(n)))) for n in ("detector", "sink")}
