"""Consumer groups: reading, claiming, dead letters, publish-and-ack, and skipping a live stream's backlog.

Worker loops see only :class:`GroupReader` (read / ack / dead-letter / publish-and-ack) and never a Redis error:
connection loss is retried with backoff here, a lost consumer group (server restarted without persistence) is
recreated here, entries trimmed away while pending are acked and skipped here.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.backoff import Backoff
from common.keys import Keys, StageName, key_slot
from common.metrics import DEAD
from common.redis_io.connection import TRANSIENT_ERRORS, Client, is_cluster
from common.redis_io.errors import RedisIOError, Refused, Unavailable, translated
from common.redis_io.inspect import GroupState, group_states
from common.redis_io.scripts import run_script
from common.redis_io.shards import ShardReads, by_slot
from common.redis_io.streams import entry_payload, reply_entries, scan_stream_keys, text
from common.settings import ConsumerConfig
from common.wire import FIELD, M, WireError, decode

log = logging.getLogger(__name__)

_RETRIED: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, Unavailable)
"""What :meth:`GroupReader.read` backs off on (Unavailable: from a ``discover`` that goes through the door)."""

NEWEST = """
local group, consumer, keep, field = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local function recording(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == field then return string.find(fields[i + 1], '\\164live\\194', 1, true) ~= nil end
  end
  return false
end
local out = {}
for k = 1, #KEYS / 2 do
  local stream, tally, name = KEYS[2 * k - 1], KEYS[2 * k], ARGV[4 + k]
  local last, lag, read
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local t = {}
      for i = 1, #g, 2 do t[g[i]] = g[i + 1] end
      if t['name'] == group then last, lag, read = t['last-delivered-id'], t['lag'], t['entries-read'] end
    end
  end
  if not last then
    out[k] = {-1, 'NOGROUP no consumer group ' .. group .. ' on ' .. stream}
  else
    local skipped = 0
    local tail = redis.call('XREVRANGE', stream, '+', '(' .. last, 'COUNT', keep + 1)
    if #tail > keep and not recording(tail[1]) then
      local cut = tail[keep + 1][1]
      if lag then
        skipped = lag - keep
      else
        skipped = #redis.call('XRANGE', stream, '(' .. last, cut)
      end
      if lag and read then
        redis.call('XGROUP', 'SETID', stream, group, cut, 'ENTRIESREAD', read + skipped)
      else
        redis.call('XGROUP', 'SETID', stream, group, cut)
      end
      redis.call('HINCRBY', tally, name, skipped)
    end
    out[k] = {skipped, redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', keep, 'STREAMS', stream, '>')}
  end
end
return out
"""
"""For each stream: skip its undelivered entries but the newest ``keep``, tally how many (a hash field), and read
those ``keep``: in one step on the server, so that no consumer of the group reads in between and nothing skipped
travels. Many streams in one run (past capacity a batch visits dozens): one command, not one each, to send, parse
and run. A stream whose newest frame is a recording's is read as it is, oldest first: the server's msgpack cannot
read the frame (it has no bin type), so the script looks for the encoded pair ``live: false`` (fixstr "live", then
0xc2), which only a recording's frame holds. KEYS: each stream then its tally hash (one slot on a cluster); ARGV:
group, consumer, keep, the message field, then each stream's field in its tally. Per stream: {skipped, entries},
or {-1, the error} for a stream without the group."""


def _per_stream(runs: Iterable[list[str]], replies: list[Any]) -> Iterator[tuple[str, Any]]:
    """Each stream's reply from :data:`NEWEST`'s runs (the streams of each run, its reply): a run that failed as a
    whole stands for each of its streams."""
    for keys, reply in zip(runs, replies, strict=True):
        yield from zip(keys, [reply] * len(keys) if isinstance(reply, Exception) else reply, strict=True)


@dataclass(frozen=True)
class Entry:
    """One stream entry handed to a consumer. ``payload`` is the wire message; ``deliveries`` counts this one."""

    key: str
    id: str
    payload: bytes | None
    """None when the entry has no message field (malformed), or when it was trimmed away."""
    deliveries: int = 1
    trimmed: bool = False
    """Deleted from the stream (MAXLEN) while it was pending: nothing left to process."""


@dataclass(frozen=True)
class Mark:
    """Members recorded in a sorted set (by time) in the same transaction as an ack, kept ``keep_s`` seconds."""

    key: str
    members: Sequence[str]
    keep_s: float = 86_400.0


@dataclass(frozen=True)
class Tally:
    """Counts added to the fields of a hash in the same transaction as an ack (e.g. stale frames per stream)."""

    key: str
    counts: Mapping[str, int]


@dataclass
class ReaderStats:
    read: int = 0
    redelivered: int = 0
    claimed: int = 0
    trimmed: int = 0
    dead_lettered: int = 0
    redis_errors: int = 0
    groups_recreated: int = 0


@dataclass
class GroupReader:
    """One consumer of one consumer group over the stream keys that match some patterns.

    A restarted consumer (same name) first re-reads its own pending entries; entries other consumers left idle
    for ``claim_idle_ms`` are claimed, and so are this consumer's own that the server delivered in a reply lost to
    a connection failure; an entry delivered more than ``max_deliveries`` times is dead-lettered.
    """

    client: Client
    group: str
    consumer: str
    discover: Callable[[], list[str]]
    """Returns the stream keys to read now (called every ``rescan_s``)."""
    dead_letters: Callable[[str], str]
    """The dead-letter stream for an entry of a stream key (on a cluster, one in the slot of that key)."""
    dead_maxlen: int = 10_000
    block_ms: int = 1000
    count: int = 8
    claim_idle_ms: int = 30_000
    max_deliveries: int = 3
    rescan_s: float = 5.0
    payload_field: str = FIELD
    stats: ReaderStats = field(default_factory=ReaderStats)
    _keys: list[str] = field(default_factory=list)
    _names: dict[str, bytes] = field(default_factory=dict)
    """The keys as bytes, for the commands that name them all."""
    _backlog: dict[str, str] = field(default_factory=dict)
    """Keys whose own pending entries are still to re-read, with the id read up to."""
    _next_scan: float = 0.0
    _next_claim: float = 0.0
    _read_backoff: Backoff = field(default_factory=lambda: Backoff(0.1, 1.0, jitter=0.0))
    """Cheap to retry a read: back soon after a restart."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _handed: set[tuple[str, str]] = field(default_factory=set)
    """(key, id) of the entries :meth:`read` returned and nobody acked or dead-lettered yet: the work in hand. Any
    other entry pending to this consumer was lost on the way (see :meth:`_claim_idle`)."""
    _handed_lock: threading.Lock = field(default_factory=threading.Lock)
    _shards: ShardReads | None = None
    """The reads over a cluster's slots (one blocking read per slot at a time); made on the first read."""

    @property
    def keys(self) -> list[str]:
        """The stream keys being read now."""
        return list(self._keys)

    def rescan_now(self) -> None:
        """Ask ``discover`` again before the next read (its answer changed: a tracker took or gave up a camera)."""
        self._next_scan = 0.0

    def positions(self) -> dict[str, GroupState] | None:
        """This group's state on each stream it reads (for the Prometheus collector); None when Redis cannot tell
        now: a scrape during an outage shows the gauges missing, not an error page."""
        try:
            return {k: g for k in self.keys for g in group_states(self.client, k) if g.name == self.group}
        except RedisIOError as exc:
            log.debug("cannot read consumer group %s: %s", self.group, exc)
            return None

    # -------------------------------------------------------------------------------------------- reading
    @translated
    def read(self, block_ms: int | None = None, skip: Collection[str] = ()) -> list[Entry]:
        """The next entries: own pending first, then claimed idle ones, then new ones, blocking up to ``block_ms``
        (default: the reader's; 0: do not block); new ones from no key in ``skip`` (the caller holds enough of those).

        Never raises on Redis trouble: it logs, backs off and returns an empty list; only a refusal other than a lost
        group (an ACL without the command) leaves, as :class:`Refused`.
        """
        try:
            entries = self._read_once(self.block_ms if block_ms is None else block_ms, skip)
        except _RETRIED as exc:  # first: a cluster's CLUSTERDOWN and TRYAGAIN are ResponseErrors too
            self.stats.redis_errors += 1
            self._next_claim = 0.0  # a read whose reply died with the connection left entries pending to us: take them
            delay = self._read_backoff.next_delay()
            log.warning("redis unavailable (%s); retrying in %.1f s", exc, delay)
            time.sleep(delay)
            return []
        except (ResponseError, Refused) as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("consumer group %s is gone (server restarted?): recreating it", self.group)
            self.stats.groups_recreated += 1
            self._next_scan = 0.0
            self._keys = []
            return []
        self._read_backoff.reset()
        return self._hand_out(entries)

    def _read_once(self, block_ms: int, skip: Collection[str] = ()) -> list[Entry]:
        now = time.monotonic()
        if now >= self._next_scan:
            self._rescan()
            self._next_scan = now + self.rescan_s
        if not self._keys:
            time.sleep(min(block_ms / 1000, self.rescan_s))
            return []
        if self._backlog and (own := self._read_own_pending()):
            return own
        if now >= self._next_claim:
            self._next_claim = now + self.claim_idle_ms / 2000
            claimed = self._claim_idle()
            if claimed:
                return claimed
        keys = [k for k in self._keys if k not in skip] if skip else self._keys
        if not keys:
            return []

        def read(target: Any, some: list[str], block: int | None) -> Any:  # BLOCK 0 would wait forever: None
            # The names as bytes: redis-py checks and encodes every argument in Python, and a read names every
            # stream (most of the CPU of a read of hundreds of streams that brings a few frames).
            streams = dict.fromkeys([self._names.get(k) or k.encode() for k in some], b">")
            return target.xreadgroup(self.group, self.consumer, streams, count=self.count, block=block)

        self._shards = self._shards or ShardReads(self.client, f"read-{self.group}")
        replies = self._shards.read(keys, read, block_ms)
        return [Entry(k, i, p, trimmed=t) for r in replies for k, i, p, t in reply_entries(r, self.payload_field)]

    def close(self) -> None:
        """Stop the reads still out on a cluster's slots (see :class:`ShardReads`): a service's last step, so that
        it exits without waiting for their BLOCK; what they deliver stays pending to this consumer."""
        if self._shards is not None:
            self._shards.close()

    def _read_own_pending(self) -> list[Entry]:
        """Entries this consumer was given before a restart and never acked, key by key, in id order."""
        while self._backlog:
            key, after = next(iter(self._backlog.items()))
            reply = self.client.xreadgroup(self.group, self.consumer, {key: after}, count=self.count)
            found = list(reply_entries(reply, self.payload_field))
            if not found:
                del self._backlog[key]
                continue
            self._backlog[key] = found[-1][1]
            self.stats.redelivered += len(found)
            return self._with_deliveries(key, [(i, p, t) for _, i, p, t in found])
        return []

    def _claim_idle(self) -> list[Entry]:
        """Entries *other* consumers left pending for claim_idle_ms (they crashed, or hang), and this consumer's own
        that it never handed out: the server delivered them but the reply was lost to a connection failure (redis-py
        may have retried the read on a new connection and said nothing). Those are taken back at once, however
        briefly idle: reads run on one thread, so at this point every entry of ours that is not in hand is lost, and
        the longer it waits the likelier a capped stream trims it unanswered.

        XPENDING's IDLE filter + XCLAIM rather than XAUTOCLAIM, which would also take back this consumer's own
        entries still being worked on. Since 7.0 XCLAIM drops entries trimmed meanwhile from the pending list."""
        out: list[Entry] = []
        waiting = self._shards.waiting if self._shards is not None else set()
        for key in self._keys:
            pipe = self.client.pipeline(transaction=False)
            pipe.xpending_range(key, self.group, "-", "+", self.count * 4, consumername=self.consumer)
            pipe.xpending_range(key, self.group, "-", "+", self.count * 4, idle=self.claim_idle_ms)
            own, idle = pipe.execute()
            with self._handed_lock:
                mine = {i for k, i in self._handed if k == key}
            # A slot whose blocking read is still out may be delivering ours right now: not lost, only on the way.
            lost = [] if key_slot(key) in waiting else [i for p in own if (i := text(p["message_id"])) not in mine]
            lost = lost[: self.count]
            left = [i for p in idle if (i := text(p["message_id"])) not in mine and i not in lost]
            # Another consumer's entry only while it is still idle (MIN-IDLE): two claimers never both take it.
            claimed: list[Any] = []
            for ids, min_idle in ((lost, 0), (left[: self.count - len(lost)], self.claim_idle_ms)):
                if ids:
                    claimed += self.client.xclaim(key, self.group, self.consumer, min_idle, ids)  # type: ignore[arg-type]
            found = [(text(i), entry_payload(f, self.payload_field), not f) for i, f in claimed if i is not None]
            if found:
                self.stats.claimed += len(found)
                log.info("claimed %d idle entries of %s for %s", len(found), key, self.consumer)
                out.extend(self._with_deliveries(key, found))
        return out

    def _with_deliveries(self, key: str, found: Sequence[tuple[str, bytes | None, bool]]) -> list[Entry]:
        pipe = self.client.pipeline(transaction=False)
        for entry_id, _, _ in found:
            pipe.xpending_range(key, self.group, min=entry_id, max=entry_id, count=1)
        counts = {text(p[0]["message_id"]): int(p[0]["times_delivered"]) for p in pipe.execute() if p}
        return [Entry(key, i, p, counts.get(i, 1), t) for i, p, t in found]

    def _hand_out(self, entries: list[Entry]) -> list[Entry]:
        """The entries read that are work to do (see :meth:`_screen`), recorded as in hand; one in hand already (a
        reply thought lost, claimed back, that came after all) is not handed out twice."""
        with self._handed_lock:
            entries = [e for e in entries if (e.key, e.id) not in self._handed]
        kept = self._screen(entries)
        with self._handed_lock:
            self._handed.update((e.key, e.id) for e in kept)
        return kept

    def _screen(self, entries: list[Entry]) -> list[Entry]:
        """Ack entries trimmed while pending; dead-letter entries past the delivery limit."""
        keep: list[Entry] = []
        for e in entries:
            if e.trimmed:
                self.stats.trimmed += 1
                self.ack([e])
            elif e.deliveries > self.max_deliveries:
                self.dead_letter(e, f"delivered {e.deliveries} times (max_deliveries={self.max_deliveries})")
            else:
                keep.append(e)
        self.stats.read += len(keep)
        return keep

    def _rescan(self) -> None:
        keys = sorted(set(self.discover()))
        new = [k for k in keys if k not in self._keys]
        for key in new:
            create_group(self.client, key, self.group)
        self._backlog.update(dict.fromkeys(new, "0"))  # a restarted consumer finds its own pending entries here
        self._keys = keys
        self._names = {k: k.encode() for k in keys}

    @translated
    def read_newest(
        self, keys: Mapping[str, str], keep: int, tally: Callable[[str], str]
    ) -> tuple[list[Entry], dict[str, int]]:
        """For each stream key (mapped to its field in the hash ``tally(field)``): skip its undelivered entries but the
        newest ``keep`` and read those (a recording's: the oldest ``keep``, none skipped). Returns the entries read
        and, per key, how many were skipped (already added to the tally). A skipped entry is never delivered: nothing
        to ack, and it costs no transfer.

        For a live stream whose plain read came back full, so that newer entries may wait behind it: what is served
        is then at most ``keep - 1`` entries behind the stream's newest when it was read. Like :meth:`read`, it
        never raises on Redis trouble: it logs and returns nothing (the caller serves what it has)."""
        if not keys:
            return [], {}
        groups = by_slot(list(keys)) if is_cluster(self.client) else {0: list(keys)}  # a run's keys share a slot
        calls = [
            (
                [k for key in slot_keys for k in (key, tally(keys[key]))],
                [self.group, self.consumer, keep, self.payload_field, *(keys[key] for key in slot_keys)],
            )
            for slot_keys in groups.values()
        ]
        try:
            replies = run_script(self.client, NEWEST, calls)
        except _RETRIED as exc:
            self.stats.redis_errors += 1
            log.warning("redis unavailable while catching up with live streams (%s)", exc)
            return [], {}
        entries: list[Entry] = []
        skipped: dict[str, int] = {}
        for key, reply in _per_stream(groups.values(), replies):
            if isinstance(reply, Exception) or int(reply[0]) < 0:
                log.warning(
                    "cannot catch up with %s: %s", key, reply if isinstance(reply, Exception) else text(reply[1])
                )
                self._next_scan = 0.0  # NOGROUP: the rescan recreates the group
                continue
            count, read = reply
            if int(count):
                skipped[key] = int(count)
            for _, found in read or ():  # a script's reply: an entry's fields come as a flat list
                for entry_id, fields in found:
                    payload = entry_payload(dict(zip(fields[::2], fields[1::2], strict=True)), self.payload_field)
                    entries.append(Entry(key, text(entry_id), payload))
        return self._hand_out(entries), skipped

    # -------------------------------------------------------------------------------------------- writing
    @translated
    def ack(self, entries: Iterable[Entry]) -> None:
        by_key: dict[str, list[str]] = {}
        for e in entries:
            by_key.setdefault(e.key, []).append(e.id)
        if by_key:

            def build(pipe: Any) -> None:
                for key, ids in by_key.items():
                    pipe.xack(key, self.group, *ids)

            self._execute(build, transaction=False)
            self.settled([(k, i) for k, ids in by_key.items() for i in ids])

    def messages(self, entries: Iterable[Entry], kind: type[M]) -> list[tuple[Entry, M]]:
        """The entries whose payload decodes as ``kind``, with their message; the others are dead-lettered with
        the reason."""
        out = []
        for entry in entries:
            try:
                out.append((entry, decode(entry.payload, kind)))
            except WireError as exc:
                self.dead_letter(entry, f"WireError: {exc}")
        return out

    @translated
    def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move an entry to the dead-letter stream with the reason, and ack it, atomically."""
        log.warning("dead-lettering %s %s: %s", entry.key, entry.id, reason)
        fields: dict[Any, Any] = {
            "origin": entry.key,
            "id": entry.id,
            "group": self.group,
            "consumer": self.consumer,
            "deliveries": entry.deliveries,
            "reason": reason,
            "ts": f"{time.time():.3f}",
            "payload": entry.payload or b"",
        }

        def build(pipe: Any) -> None:
            pipe.xadd(self.dead_letters(entry.key), fields, maxlen=self.dead_maxlen, approximate=True)
            pipe.xack(entry.key, self.group, entry.id)

        self._execute(build, acks=[entry])
        self.settled([(entry.key, entry.id)])
        self.stats.dead_lettered += 1
        DEAD.labels(self.group, entry.key).inc()

    @translated
    def publish_and_ack(
        self,
        messages: Sequence[tuple[str, bytes, int]],
        done: Sequence[Entry],
        mark: Mark | None = None,
        tallies: Sequence[Tally] = (),
    ) -> None:
        """XADD every (key, payload, maxlen) and XACK the entries they answer, in one MULTI/EXEC; with ``mark``,
        also record its members as handled (see :meth:`handled`), and add the counts of ``tallies``, in the same
        transaction."""
        if not messages and not done:
            return  # a batch of only dead-lettered frames: no round trip

        def build(pipe: Any) -> None:
            for key, payload, maxlen in messages:
                pipe.xadd(key, {self.payload_field: payload}, maxlen=maxlen, approximate=True)
            if mark is not None and mark.members:
                now = time.time()
                pipe.zadd(mark.key, dict.fromkeys(mark.members, now))
                pipe.zremrangebyscore(mark.key, "-inf", now - mark.keep_s)  # bounded: old marks go
            for tally in tallies:
                for name, count in tally.counts.items():
                    pipe.hincrby(tally.key, name, count)
            for e in done:
                pipe.xack(e.key, self.group, e.id)

        self._execute(build, acks=done)
        self.settled([(e.key, e.id) for e in done])

    @translated
    def handled(self, key: str, members: Sequence[str]) -> set[str]:
        """Which of ``members`` a :class:`Mark` on ``key`` recorded (so a redelivered entry is not acted on twice).

        Retried like the writes: a mark missed for a blip would mean acting twice."""
        if not members:
            return set()
        [scores] = self._execute(lambda pipe: pipe.zmscore(key, list(members)), transaction=False)
        return {m for m, score in zip(members, scores, strict=True) if score is not None}

    def settled(self, done: Iterable[tuple[str, str]]) -> None:
        """(key, id) acked or dead-lettered (here, or by a write of the caller's own): no longer work in hand."""
        with self._handed_lock:
            self._handed.difference_update(done)

    def _execute(
        self, build: Callable[[Any], object], transaction: bool = True, acks: Sequence[Entry] = ()
    ) -> list[Any]:
        """Run the commands ``build`` queues, retrying until the server takes them all (see :meth:`_attempts`).

        On a cluster a transaction holds the keys of one slot: the commands are split by slot into transactions run
        one after another, those that ack last, so that whatever an interruption leaves undone is redelivered (its
        entries still pending) and finds the writes made before it (e.g. an alert sink's marks). Their replies then
        come slot by slot."""
        if not transaction or not is_cluster(self.client):
            return self._attempts(build, transaction, acks)
        queued = _Queued()
        build(queued)
        replies: list[Any] = []
        for slot, calls in sorted(queued.by_slot().items(), key=lambda item: any(c[0] == "xack" for c in item[1])):
            replies += self._attempts(
                functools.partial(_replay, calls=calls), True, [e for e in acks if key_slot(e.key) == slot]
            )
        return replies

    def _attempts(self, build: Callable[[Any], object], transaction: bool, acks: Sequence[Entry]) -> list[Any]:
        """Run the commands ``build`` queues, retrying until the server takes them all; returns their replies.

        Writes must not be lost to a blip, nor to a full server: the entries they answer stay pending meanwhile,
        so holding here is back-pressure, not loss (the caller's deadline bounds us). Each attempt queues the
        commands afresh: redis-py empties a pipeline when ``execute`` raises.

        ``acks``: the entries a transaction acks. An attempt that failed on the connection may still have been
        executed, its reply lost (a timeout, a reset after EXEC went out); since a transaction is all or nothing,
        none of them pending any more means it was, and it is not sent again (which would publish twice). Its
        replies are then unknown: an empty list is returned.
        """
        backoff: Backoff | None = None  # made on the first failure: a write that goes through (nearly all) needs none
        failed = False
        while True:
            pipe = self.client.pipeline(transaction=transaction)
            if acks and is_cluster(self.client):
                _not_resent_on_cluster(pipe)
            elif acks:
                pipe._disconnect_raise_on_watching = _sent_once  # type: ignore[method-assign]
            build(pipe)
            try:
                if failed and acks and self._ran(acks):
                    return []
                with self._lock:
                    replies: list[Any] = pipe.execute()
                return replies
            except TRANSIENT_ERRORS as exc:
                failed = True
                backoff = backoff or Backoff(0.1, 1.0, jitter=0.0)
                delay = backoff.next_delay()
                self.stats.redis_errors += 1
                log.warning("redis write failed (%s); retrying in %.1f s", exc, delay)
            except OutOfMemoryError as exc:  # a transaction's OOM surfaces as its command's error, not EXECABORT
                backoff = backoff or Backoff(0.1, 1.0, jitter=0.0)
                delay = backoff.next_delay()
                self.stats.redis_errors += 1
                log.error(
                    "redis is full (%s): holding these writes and retrying in %.1f s; give the server more "
                    "maxmemory, or keep less in it (streams.frames_maxlen, streams.results_maxlen)",
                    str(exc).rsplit("caused error: ", 1)[-1][:200], delay,
                )  # fmt: skip
            time.sleep(delay)

    def _ran(self, entries: Sequence[Entry]) -> bool:
        """Whether a transaction that acks ``entries`` was executed: one of them is still in its stream but no longer
        pending. Entries gone from their stream (a server restarted without persistence, which lost the
        transaction too; or trimmed) or a group gone prove nothing: then it is sent again."""
        pipe = self.client.pipeline(transaction=False)
        for e in entries:
            pipe.xrange(e.key, e.id, e.id, count=1)
            pipe.xpending_range(e.key, self.group, min=e.id, max=e.id, count=1)
        replies = pipe.execute(raise_on_error=False)
        if any(isinstance(r, ResponseError) for r in replies):
            return False  # NOGROUP: the server lost the group, and with it whatever the transaction did
        return any(bool(kept) and not pending for kept, pending in zip(replies[::2], replies[1::2], strict=True))


def _sent_once(conn: Any, error: BaseException, *_: object) -> None:
    """In place of redis-py's step between two tries of a pipeline: a transaction that acks is never sent again by
    redis-py itself, which retries on a connection error even when the reply, not the request, was lost (Redis
    killed after it ran EXEC: the results were published twice). The error reaches :meth:`GroupReader._attempts`,
    which first asks Redis whether the transaction ran (:meth:`GroupReader._ran`)."""
    conn.disconnect()
    raise error


def _not_resent_on_cluster(pipe: Any) -> None:
    """The cluster's counterpart of :func:`_sent_once`: redis-py's cluster transaction still retries a redirect or a
    cluster settling (answers that prove it did not run), but a connection error, which may have lost the reply of
    one that ran, ends its retries (after its own clean-up) and reaches :meth:`GroupReader._attempts`."""
    retry = getattr(getattr(pipe, "_execution_strategy", None), "_retry", None)  # the pipeline's own copy
    if retry is None:  # a redis-py whose cluster pipeline is built otherwise: its retries stay (the tests show it)
        log.warning("redis-py's cluster pipeline has no retry to adjust: a lost reply may publish twice")
        return
    retry.is_retryable = _not_a_lost_reply


def _not_a_lost_reply(error: BaseException) -> bool:
    return not isinstance(error, (RedisConnectionError, RedisTimeoutError, OSError))


class _Queued:
    """Stands in for a pipeline: records the commands queued on it (each names its key first), to split by slot."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def by_slot(self) -> dict[int, list[tuple[str, tuple[Any, ...], dict[str, Any]]]]:
        out: dict[int, list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = {}
        for call in self.calls:
            out.setdefault(key_slot(text(call[1][0])), []).append(call)
        return out


def _replay(pipe: Any, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
    for name, args, kwargs in calls:
        getattr(pipe, name)(*args, **kwargs)


def group_reader(
    client: Client,
    keys: Keys,
    stage: StageName,
    group: str,
    consumer: str,
    cfg: ConsumerConfig,
    count: int,
    dead_maxlen: int,
    tracker: str = "",
) -> GroupReader:
    """A reader of the ``stage`` streams of one stack whose names match ``cfg.streams`` (tracks and events: those of
    the tracker sink ``tracker``)."""
    found = keys.stage(stage, tracker)
    return GroupReader(
        client,
        group=group,
        consumer=consumer,
        discover=lambda: scan_stream_keys(client, found, cfg.streams),
        dead_letters=keys.dead_letters,
        dead_maxlen=dead_maxlen,
        block_ms=cfg.block_ms,
        count=count,
        claim_idle_ms=cfg.claim_idle_ms,
        max_deliveries=cfg.max_deliveries,
        rescan_s=cfg.rescan_s,
    )


def stream_reader(
    client: Client, key: str, group: str, consumer: str, cfg: ConsumerConfig, count: int,
    dead_letters: Callable[[str], str], dead_maxlen: int, start_id: str = "0",
) -> GroupReader:  # fmt: skip
    """A reader of one stream; its group starts at ``start_id`` when it is created ("$": only what comes next)."""
    ensure_group(client, key, group, start_id)
    return GroupReader(
        client, group=group, consumer=consumer, discover=lambda: [key], dead_letters=dead_letters,
        dead_maxlen=dead_maxlen,
        block_ms=cfg.block_ms, count=count, claim_idle_ms=cfg.claim_idle_ms, max_deliveries=cfg.max_deliveries,
        rescan_s=cfg.rescan_s,
    )  # fmt: skip


def create_group(client: Client, key: str, group: str, start_id: str = "0") -> bool:
    """Create a consumer group (and the stream); True if created, False if it existed (BUSYGROUP). Raises redis-py's
    errors, for the door's own retry loops; :func:`ensure_group` is the one to call from outside."""
    try:
        client.xgroup_create(key, group, id=start_id, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    return True


ensure_group = translated(create_group)
"""Create a consumer group (and the stream); True if created, False if it existed (BUSYGROUP)."""
