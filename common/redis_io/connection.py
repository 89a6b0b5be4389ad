"""Connections: the client every other module holds (as :data:`Client`) but never calls itself."""

from __future__ import annotations

import socket
import struct
from typing import Any, TypeAlias

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import Connection, SSLConnection, parse_url
from redis.exceptions import BusyLoadingError, NoPermissionError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from common.redis_io.errors import CLUSTER_TRANSIENT, Denied, RedisIOError, Refused, translate, translated
from common.redis_io.settings import RedisConfig

Client: TypeAlias = redis.Redis | redis.RedisCluster
"""What :func:`connect` returns (a cluster's client with ``redis.cluster``); annotations elsewhere name this, not
redis-py."""

REDIS_PY_VERSION: str = redis.__version__
"""The client library's version (benchmarks report it)."""

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    *CLUSTER_TRANSIENT,
)
"""redis-py's errors the door's own loops retry (inside the door only: outside, they are :class:`Unavailable`)."""


class _AbortOnClose:
    """A connection whose socket is closed abortively (SO_LINGER 0: a reset, its unsent bytes dropped).

    A call that timed out on a silent network closes its connection, and with a plain close the kernel keeps sending
    what the call had written: once the network is back, Redis would run it late, after the caller had read back
    what landed and concluded it had not (ingest would count a pushed frame as dropped, a detector send a
    transaction again). Nothing is lost this way: a connection is only closed with nothing of ours left unsent,
    or after a failure that makes its caller find out what landed."""

    def _connect(self) -> socket.socket:
        sock: socket.socket = super()._connect()  # type: ignore[misc]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return sock


class _TcpConnection(_AbortOnClose, Connection):
    pass


class _TlsConnection(_AbortOnClose, SSLConnection):
    pass


def connect(url: str, cfg: RedisConfig | None = None) -> Client:
    """A client for redis://, rediss:// or unix:// URLs, with retries and a socket timeout above any BLOCK.

    Over rediss:// the server's certificate is verified, against ``cfg.tls_ca_file`` (else the system's CAs), and
    ``cfg.tls_cert_file``/``tls_key_file`` are presented for mutual TLS."""
    cfg = cfg or RedisConfig()
    tls: dict[str, Any] = {}
    if url.startswith("rediss://"):
        tls = {
            "ssl_cert_reqs": "required",
            "ssl_ca_certs": str(cfg.tls_ca_file) if cfg.tls_ca_file else None,
            "ssl_certfile": str(cfg.tls_cert_file) if cfg.tls_cert_file else None,
            "ssl_keyfile": str(cfg.tls_key_file) if cfg.tls_key_file else None,
            "ssl_check_hostname": cfg.tls_check_hostname,
        }
    elif cfg.tls_settings:  # the config refuses this; a URL given apart from it (sink tail --redis-url) may not
        raise ValueError(f"redis {', '.join(cfg.tls_settings)} set, but the URL is not rediss://")
    # Not on timeouts: a call on a silent network must give up after socket_timeout, once, and let its loop decide
    # (retrying it would hold a read for (retries + 1) timeouts). Retry's own default errors include TimeoutError,
    # and retry_on_error only adds to them: hence supported_errors.
    retry = Retry(
        ExponentialBackoff(cap=2.0, base=0.05), cfg.retries, supported_errors=(RedisConnectionError, BusyLoadingError)
    )
    common: dict[str, Any] = {
        "connection_class": _TlsConnection if url.startswith("rediss://") else _TcpConnection,
        "socket_timeout": cfg.socket_timeout_s,
        "socket_connect_timeout": cfg.connect_timeout_s,
        "health_check_interval": 30,
        **tls,
    }
    if url.startswith("unix://"):
        del common["connection_class"]  # nothing waits in a unix socket: what was written is the server's
    if cfg.cluster:
        if url.startswith("unix://"):
            raise ValueError("redis.cluster: a cluster is reached over TCP (redis:// or rediss://), not a unix socket")
        # The cluster client retries a command itself across a failover (CLUSTERDOWN, MOVED, a node gone: it asks
        # the cluster for the slots again); its retry object sets how many times and how long it waits between.
        # Not from_url: it would put redis-py's own SSLConnection for rediss:// in place of the class chosen above.
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        if options.pop("db", 0) != 0:
            raise ValueError("redis.cluster: a cluster has database 0 only: drop the /N from the URL")
        try:
            return redis.RedisCluster(retry=retry, **{**options, **common})
        except (RedisError, RedisClusterException) as exc:  # it asks the nodes for their slots and commands now
            raise _why_no_cluster(url, common, exc) from exc
    return redis.Redis.from_url(url, retry=retry, retry_on_error=[RedisConnectionError, BusyLoadingError], **common)


def _why_no_cluster(url: str, common: dict[str, Any], error: BaseException) -> RedisIOError:
    """redis-py says "cluster mode is not enabled" for a node whose ACL refused it CLUSTER SLOTS, too: ask the node
    itself, so that a missing right or a server that is no cluster node is said as such."""
    try:
        node: Any = redis.Redis.from_url(url, **common)
        try:
            node.execute_command("CLUSTER", "SLOTS")
            node.execute_command("COMMAND", "COUNT")
        finally:
            node.close()
    except NoPermissionError as exc:
        return Denied(f"{exc}: on a cluster the user needs +cluster|slots and +command too (README, Redis ACL and TLS)")
    except ResponseError as exc:
        if "cluster" in str(exc).lower():
            return Refused(f"redis.cluster is on, but the server at the URL is no cluster node ({exc})")
    except (RedisError, OSError):
        pass  # not reachable, say: what the cluster client said says it
    return translate(error)


def is_cluster(client: Client) -> bool:
    """Whether ``client`` talks to a Redis Cluster (keys of one operation must then share a slot)."""
    return isinstance(client, redis.RedisCluster)


@translated
def ping(client: Client) -> None:
    """Ask the server to answer; raises :class:`Denied` for wrong credentials, :class:`Unavailable` when it cannot
    be reached (a wrong URL fails here at once, rather than being retried by a loop)."""
    client.ping()
