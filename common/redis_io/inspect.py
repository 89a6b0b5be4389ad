"""How far readers are behind their streams: one reading of XINFO GROUPS and one lag, for everyone who asks.

The launcher's drain, ``common.stack.status``, the ingest pacer and the Prometheus collector all need "how many entries
has this group still to read": :func:`group_states` is the one answer. Redis tells a group's lag, except after
entries were deleted from the middle of the stream; then the entries past the group's last-delivered id are
counted, up to a limit (so that a look never reads a whole stream).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from common.redis_io.connection import Client
from common.redis_io.errors import translated
from common.redis_io.streams import text

COUNT_LIMIT = 10_000
"""Most entries counted to tell a group's lag that Redis cannot tell."""


@dataclass(frozen=True)
class GroupState:
    """One consumer group on one stream (XINFO GROUPS)."""

    name: str
    consumers: int
    pending: int
    """Delivered to a consumer, not acked yet."""
    unread: int
    """Not delivered yet: Redis's lag, or when it cannot tell, the entries past ``last_delivered`` (at most the
    limit asked for)."""
    last_delivered: str
    entries_read: int | None
    lag_known: bool = True
    """False when Redis could not tell the lag and ``unread`` was counted."""


@translated
def group_states(client: Client, key: str, limit: int = COUNT_LIMIT) -> list[GroupState]:
    """Every consumer group of a stream; none when the stream does not exist (yet)."""
    try:
        groups: Any = client.xinfo_groups(key)
    except ResponseError as exc:
        if _no_such_key(exc):
            return []
        raise
    out = []
    for g in groups:
        known = g.get("lag") is not None
        out.append(GroupState(
            name=text(g["name"]), consumers=int(g["consumers"]), pending=int(g["pending"]),
            unread=int(g["lag"]) if known else _count_after(client, key, text(g["last-delivered-id"]), limit),
            last_delivered=text(g["last-delivered-id"]),
            entries_read=None if g.get("entries-read") is None else int(g["entries-read"]), lag_known=known,
        ))  # fmt: skip
    return out


def _no_such_key(exc: ResponseError) -> bool:
    return "no such key" in str(exc).lower()


def _count_after(client: Client, key: str, last_delivered: str, limit: int) -> int:
    entries: Any = client.xrange(key, min="(" + last_delivered, count=limit)
    return len(entries)


def group_state(client: Client, key: str, group: str, limit: int = COUNT_LIMIT) -> GroupState | None:
    """One group of one stream; None when the stream or the group does not exist."""
    return next((g for g in group_states(client, key, limit) if g.name == group), None)


@dataclass(frozen=True)
class Backlog:
    """How far the readers of a stream are behind it."""

    readers: int
    """Consumer groups on the stream."""
    unread: int
    """Entries the slowest group has not been given yet; with no group, every entry of the stream."""
    slowest: str = ""
    """The group with that many to read."""


@translated
def backlog(client: Client, key: str, limit: int) -> Backlog:
    """The backlog of one stream (0 readers, 0 unread when it does not exist); a lag Redis cannot tell is counted
    up to ``limit``."""
    groups = group_states(client, key, limit)
    if not groups:
        return Backlog(0, int(client.xlen(key)))
    slowest = max(groups, key=lambda g: g.unread)
    return Backlog(len(groups), slowest.unread, slowest.name)


@translated
def outstanding(client: Client, key: str, groups: Iterable[str], limit: int = COUNT_LIMIT) -> int:
    """Entries of a stream that the given groups have not finished, summed: not delivered yet, or delivered and
    not acked. A group that does not exist yet (its reader has not discovered the stream) owes every entry."""
    wanted = list(groups)
    if not wanted:
        return 0
    states = {g.name: g for g in group_states(client, key, limit)}
    length: int | None = None
    total = 0
    for name in wanted:
        g = states.get(name)
        if g is None:
            length = int(client.xlen(key)) if length is None else length
            total += length
        else:
            total += g.pending + g.unread
    return total


@translated
def entries_added(client: Client, key: str) -> int:
    """Entries ever added to a stream (its entry counter, which trimming does not lower); 0 when it does not exist."""
    try:
        info: Any = client.xinfo_stream(key)
    except ResponseError as exc:
        if _no_such_key(exc):
            return 0
        raise
    return int(info.get("entries-added") or info["length"])


@translated
def aof_rewriting(client: Client) -> bool:
    """Whether the server is writing (or about to write) its append-only file afresh."""
    info: Any = client.info("persistence")
    return bool(info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"))
