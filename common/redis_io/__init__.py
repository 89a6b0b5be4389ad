"""The one door to Redis: nothing outside this package imports redis-py, nor sees its errors.

Callers hold a :data:`Client` (from :func:`connect`) and hand it to the functions here, which translate redis-py's
errors into the family of :mod:`common.redis_io.errors` (:class:`Unavailable`, :class:`Refused`, :class:`Denied`,
:class:`Full`, all :class:`RedisIOError`). Worker loops go through :class:`GroupReader`, which retries connection
loss and recreates lost groups by itself.

- ``errors``: the exception family and the translation.
- ``connection``: :func:`connect`, :func:`ping`, the :data:`Client` alias.
- ``streams``: stream discovery (:func:`stream_keys`), entries read back, a prefix's clean-up.
- ``groups``: :class:`GroupReader` and the group readers' helpers.
- ``inspect``: a group's lag and pending, a stream's backlog (the drain, status, the pacer, metrics).
- ``follow``: following streams with plain XREAD, no group.
- ``frames``: the frames writer ingest's publisher uses.
- ``hashes``: the small hashes beside the streams (beacons, tallies).
- ``media``: frames read back by time, for clips (entries between two moments, the oldest kept).
- ``leases``: one owner at a time (a tracker's cameras), live members, and writes fenced by a lease.

``common.metrics`` imports nothing of this package (its group collector takes any reader with ``positions()``),
so that this package may count dead letters there without an import cycle.
"""

from common.redis_io.connection import REDIS_PY_VERSION, Client, connect, ping
from common.redis_io.errors import Denied, Full, RedisIOError, Refused, Unavailable
from common.redis_io.follow import follow
from common.redis_io.frames import FetchFrame, add_entries, frame_reader, newest_payloads
from common.redis_io.groups import (
    Entry,
    GroupReader,
    Mark,
    ReaderStats,
    Tally,
    ensure_group,
    group_reader,
    stream_reader,
)
from common.redis_io.hashes import delete_field, fields, set_field
from common.redis_io.inspect import (
    COUNT_LIMIT,
    Backlog,
    GroupState,
    aof_rewriting,
    backlog,
    entries_added,
    group_state,
    group_states,
    outstanding,
)
from common.redis_io.media import entries_between, oldest_id
from common.redis_io.streams import newest, read_entry, remove_prefix, reply_entries, stream_keys, text

__all__ = [
    "COUNT_LIMIT",
    "REDIS_PY_VERSION",
    "Backlog",
    "Client",
    "Denied",
    "Entry",
    "FetchFrame",
    "Full",
    "GroupReader",
    "GroupState",
    "Mark",
    "ReaderStats",
    "RedisIOError",
    "Refused",
    "Tally",
    "Unavailable",
    "add_entries",
    "aof_rewriting",
    "backlog",
    "connect",
    "delete_field",
    "ensure_group",
    "entries_added",
    "entries_between",
    "fields",
    "follow",
    "frame_reader",
    "group_reader",
    "group_state",
    "group_states",
    "newest",
    "newest_payloads",
    "oldest_id",
    "outstanding",
    "ping",
    "read_entry",
    "remove_prefix",
    "reply_entries",
    "set_field",
    "stream_keys",
    "stream_reader",
    "text",
]
