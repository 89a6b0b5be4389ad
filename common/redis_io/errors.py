"""The door's own errors: what code outside ``common.redis_io`` catches, instead of redis-py's.

redis-py's classes say which layer failed (``AuthenticationError`` is a ``ConnectionError``, ``OutOfMemoryError`` a
``ResponseError``); a caller needs to know what to do: wait and try again, give up and say why, or hold its writes.
Every function of the door translates at its boundary (:data:`translated`), as httpx does with httpcore's errors:

==================  ====================================================================================
``Unavailable``     ``ConnectionError``, ``TimeoutError``, ``BusyLoadingError``, an ``OSError`` on the socket,
                    and a cluster between owners (``CLUSTERDOWN``, ``TRYAGAIN``, a slot no node serves, no
                    node reachable): the server cannot be reached or is not ready; the same call may succeed
                    later.
``Denied``          ``AuthenticationError``, ``AuthorizationError``, ``NoPermissionError``: this client's
                    credentials or its ACL; trying again cannot help.
``Full``            ``OutOfMemoryError``: maxmemory reached (``noeviction``); writes pass again once readers
                    catch up or the server gets more memory.
``Refused``         any other ``ResponseError`` (wrong type, ``READONLY``, an unknown command...); also the base
                    of ``Denied`` and ``Full``: the server answered, and the answer was no.
``RedisIOError``    anything else redis-py raises (a protocol or data error); the base of the family.
==================  ====================================================================================

The message is redis-py's own (the server's words); the original exception is the ``__cause__``.
"""

from __future__ import annotations

from contextlib import ContextDecorator
from types import TracebackType

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterError,
    NoPermissionError,
    OutOfMemoryError,
    RedisClusterException,
    RedisClusterUnreachableError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class RedisIOError(Exception):
    """Redis did not do what was asked; the base of the door's errors."""


class Unavailable(RedisIOError):  # noqa: N818 (read as what happened: `except Unavailable`)
    """The server cannot be reached, did not answer in time, or is still loading its data: try again later."""


class Refused(RedisIOError):  # noqa: N818 (as Unavailable)
    """The server answered with an error: it will not run this command as it stands."""


class Denied(Refused):
    """The server turns this client away: wrong credentials, or an ACL without the command or key."""


class Full(Refused):
    """The server is out of memory (maxmemory, ``noeviction``) and refuses writes until it has room again."""


CLUSTER_TRANSIENT: tuple[type[BaseException], ...] = (
    ClusterError,  # CLUSTERDOWN, MASTERDOWN: a failover under way, or the majority lost
    TryAgainError,  # a slot being migrated
    SlotNotCoveredError,
    RedisClusterUnreachableError,
)
"""A cluster's errors that pass once its nodes settle (redis-py's cluster client retries them too, a few times)."""

# Order matters: redis-py's AuthenticationError is a ConnectionError, its OutOfMemoryError a ResponseError.
_MAPPING: tuple[tuple[tuple[type[BaseException], ...], type[RedisIOError]], ...] = (
    ((AuthenticationError, AuthorizationError, NoPermissionError), Denied),
    ((OutOfMemoryError,), Full),
    (CLUSTER_TRANSIENT, Unavailable),
    ((RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError), Unavailable),
    ((ResponseError,), Refused),
)


def translate(exc: BaseException) -> RedisIOError:
    """The family's error for a redis-py error (or a socket's OSError), with the same message, caused by it."""
    if isinstance(exc, RedisIOError):
        return exc
    kind = next((family for classes, family in _MAPPING if isinstance(exc, classes)), RedisIOError)
    out = kind(str(exc) or type(exc).__name__)
    out.__cause__ = exc
    return out


def translated_reply(reply: object) -> object:
    """A pipeline reply (``raise_on_error=False``): an error the server answered a command with is translated."""
    return translate(reply) if isinstance(reply, (RedisError, RedisClusterException)) else reply


class _Translated(ContextDecorator):
    """``with translated:`` or ``@translated``: redis-py's errors (and socket OSErrors) leave as the family's."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, (RedisError, RedisClusterException, OSError)):
            raise translate(exc) from exc


translated = _Translated()
