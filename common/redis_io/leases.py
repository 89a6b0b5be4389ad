"""Leases: one owner at a time for a piece of work (a tracker's camera), with writes fenced by the lease.

A lease is a string key holding its owner's name with a TTL: taken with SET NX PX, renewed only by its owner, and
gone when the owner stops renewing it (it died, or hangs). An owner that lost its lease without noticing (a long
pause) must not write over the new owner's work: :func:`commit_if_owner` checks the lease and makes every write in
one server-side script, so a write either lands whole under a held lease or not at all.

Live members (a tracker sink's replicas, to split the cameras fairly) are a sorted set scored by expiry time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from common.redis_io.connection import Client
from common.redis_io.errors import translated
from common.redis_io.scripts import run_script
from common.redis_io.shards import by_slot
from common.redis_io.streams import text

_RENEW = """
local kept = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    kept[#kept + 1] = key
  end
end
return kept
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] is the lease; the writes name their keys by index into KEYS (declared, as scripts must).
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for _, op in ipairs(cmsgpack.unpack(ARGV[2])) do
  local kind, key = op[1], KEYS[op[2]]
  if kind == 'xadd' then
    redis.call('XADD', key, 'MAXLEN', '~', op[3], '*', op[4], op[5])
  elseif kind == 'hincrby' then
    redis.call('HINCRBY', key, op[3], op[4])
  elseif kind == 'hset' then
    redis.call('HSET', key, op[3], op[4])
  elseif kind == 'set' then
    redis.call('SET', key, op[3])
  elseif kind == 'xack' then
    redis.call('XACK', key, op[3], unpack(op[4]))
  end
end
return 1
"""

_ACK_CHUNK = 1000
"""Ids per XACK in a script: Lua's unpack() has a stack limit of a few thousand values."""


@translated
def acquire(client: Client, key: str, owner: str, ttl_ms: int) -> bool:
    """Take the lease if nobody holds it; True when ``owner`` holds it now (taken now, or held already)."""
    if client.set(key, owner, nx=True, px=ttl_ms):
        return True
    held: Any = client.get(key)
    if held is not None and text(held) == owner:
        client.pexpire(key, ttl_ms)
        return True
    return False


@translated
def renew(client: Client, keys: Sequence[str], owner: str, ttl_ms: int) -> list[str]:
    """Extend the leases ``owner`` still holds among ``keys``; returns those (the others were lost)."""
    if not keys:
        return []
    # One run per slot: a cluster runs a script on keys of one slot.
    replies = run_script(client, _RENEW, [(group, [owner, ttl_ms]) for group in by_slot(keys).values()])
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return [text(k) for kept in replies for k in kept]


@translated
def release(client: Client, key: str, owner: str) -> bool:
    """Give the lease up, if ``owner`` still holds it."""
    return bool(client.register_script(_RELEASE)([key], [owner]))


@translated
def holder(client: Client, key: str) -> str | None:
    """Who holds the lease now, if anyone."""
    held: Any = client.get(key)
    return None if held is None else text(held)


@translated
def members(client: Client, key: str, member: str, ttl_s: float, now: float) -> int:
    """Say ``member`` is alive for ``ttl_s`` more seconds, forget the expired, and count the live ones."""
    pipe = client.pipeline(transaction=True)
    pipe.zadd(key, {member: now + ttl_s})
    pipe.zremrangebyscore(key, "-inf", now)
    pipe.zcard(key)
    return int(pipe.execute()[-1])


@translated
def leave(client: Client, key: str, member: str) -> None:
    """``member`` is leaving: the others take its share at once, not when its entry expires."""
    client.zrem(key, member)


@translated
def load(client: Client, key: str) -> bytes | None:
    """A blob (a checkpoint) written by a commit, if any."""
    found: Any = client.get(key)
    return None if found is None else bytes(found)


@translated
def take_pending(client: Client, key: str, group: str, consumer: str) -> int:
    """Make every entry pending in ``group`` on ``key`` this consumer's (a new owner taking over a dead one's
    work), without counting a delivery; returns how many moved."""
    # XPENDING + XCLAIM JUSTID, not XAUTOCLAIM JUSTID: redis-py drops the latter's cursor.
    moved, start = 0, "-"
    while True:
        pending: Any = client.xpending_range(key, group, start, "+", 1000)
        ids = [text(p["message_id"]) for p in pending if text(p["consumer"]) != consumer]
        if ids:
            client.xclaim(key, group, consumer, 0, ids, justid=True)  # type: ignore[arg-type]
            moved += len(ids)
        if len(pending) < 1000:
            return moved
        start = "(" + text(pending[-1]["message_id"])


@dataclass
class Commit:
    """Writes to make together, under a lease: stream entries, hash fields, a blob, acks."""

    keys: dict[str, int] = field(default_factory=dict)
    """Each key written, with its index in the script's KEYS (KEYS[1] is the lease; Lua counts from 1)."""
    ops: list[list[Any]] = field(default_factory=list)

    def _index(self, key: str) -> int:
        return self.keys.setdefault(key, len(self.keys) + 2)

    def add(self, key: str, name: str, payload: bytes, maxlen: int) -> None:
        """XADD (MAXLEN ~) one entry of one field."""
        self.ops.append(["xadd", self._index(key), maxlen, name, payload])

    def increment(self, key: str, increments: dict[str, int]) -> None:
        """HINCRBY each field (zeros left out)."""
        self.ops += [["hincrby", self._index(key), name, n] for name, n in increments.items() if n]

    def assign(self, key: str, values: dict[str, int]) -> None:
        """HSET each field."""
        self.ops += [["hset", self._index(key), name, v] for name, v in values.items()]

    def put(self, key: str, blob: bytes) -> None:
        """SET the key to a blob."""
        self.ops.append(["set", self._index(key), blob])

    def ack(self, key: str, group: str, ids: Iterable[str]) -> None:
        """XACK entries of a stream in a group."""
        wanted = list(ids)
        for start in range(0, len(wanted), _ACK_CHUNK):
            self.ops.append(["xack", self._index(key), group, wanted[start : start + _ACK_CHUNK]])


@translated
def commit_if_owner(client: Client, lease: str, owner: str, commit: Commit) -> bool:
    """Make every write of ``commit`` if ``owner`` holds ``lease``, atomically; False (nothing written) if not."""
    if not commit.ops:
        return True
    packed = msgpack.packb(commit.ops, use_bin_type=False)  # Lua's cmsgpack knows no bin type: bytes go as raw
    # EVALSHA, loading the script on NOSCRIPT: register_script only hashes it here.
    return bool(client.register_script(_COMMIT)([lease, *commit.keys], [owner, packed]))  # keys in index order
