"""How the stack reaches Redis: its URL, timeouts, retries and TLS, or the embedded server it starts without one.

Beside the door (``common.redis_io``) rather than in ``common.config``, which imports the plug-ins while it builds
its unions: the door is imported by plug-ins, so it must not need the config back.
"""

from __future__ import annotations

from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from common.redact import redact
from common.settings import ConfigPath, Strict


class EmbeddedServerConfig(Strict):
    socket_dir: ConfigPath | None = Field(
        None, description="Folder for the embedded server's unix socket; default: a per-user runtime folder."
    )
    maxmemory_mb: int = Field(1024, ge=16, le=1_048_576, description="maxmemory of the embedded server.")
    data_dir: ConfigPath | None = Field(
        None,
        description="Keep an append-only file here (fsync before every reply) so streams and pending lists survive "
        "restarts and crashes; None: keep nothing.",
    )


class RedisConfig(Strict):
    url: str | None = Field(
        None,
        description="redis://, rediss:// or unix:// URL (password in the URL). None: start an embedded server.",
    )
    cluster: bool = Field(
        False,
        description="The URL names one node of a Redis/Valkey Cluster: keys carry a shard tag (streams.shards) and "
        "every service follows the cluster's slots across failovers and resharding.",
    )
    wait_replicas: int = Field(
        0,
        ge=0,
        le=16,
        description="Ingest's frame writes return once this many replicas of their primary hold them (WAIT), so a "
        "primary's failover loses no frame it acknowledged; costs a round trip to the replicas per batch. 0: "
        "asynchronous replication. (Results and acks need none: one lost with a primary leaves its frame pending, "
        "and it is answered again.)",
    )
    wait_timeout_ms: int = Field(
        500, ge=1, le=60_000, description="How long a write waits for wait_replicas (then counted as unreplicated)."
    )
    socket_timeout_s: float = Field(
        10.0,
        ge=1,
        le=3600,
        description="Socket timeout: the longest any call waits on a silent network; must exceed every blocking "
        "read (block_ms).",
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=300, description="Timeout of one connection attempt.")
    retries: int = Field(6, ge=0, le=100, description="Retries with exponential backoff on connection errors.")
    embedded: EmbeddedServerConfig = Field(default_factory=EmbeddedServerConfig)
    tls_ca_file: ConfigPath | None = Field(
        None, description="rediss:// only: CA bundle (PEM) the server's certificate must chain to; None: the system's."
    )
    tls_cert_file: ConfigPath | None = Field(
        None, description="rediss:// only: client certificate (PEM) for mutual TLS; needs tls_key_file."
    )
    tls_key_file: ConfigPath | None = Field(
        None, description="rediss:// only: private key (PEM, unencrypted) of tls_cert_file."
    )
    tls_check_hostname: bool = Field(
        True, description="rediss:// only: the server's certificate must name the URL's host."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url

    @property
    def tls_settings(self) -> list[str]:
        """The TLS fields set to something other than their default."""
        return [name for name in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(self, name)] + (
            [] if self.tls_check_hostname else ["tls_check_hostname"]
        )

    @model_validator(mode="after")
    def _cluster_over_tcp(self) -> Self:
        if self.cluster and (self.url or "unix://").startswith("unix://"):
            got = "none is set (the embedded server is a single node)" if self.url is None else "a unix socket is not"
            raise ValueError(f"cluster: true needs a redis:// or rediss:// url of one of its nodes; {got}")
        if self.cluster and urlsplit(self.url or "").path.strip("/") not in ("", "0"):
            raise ValueError(
                f"cluster: true: a cluster has database 0 only; drop the /N from the url ({redact(self.url or '')})"
            )
        return self

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("mutual TLS needs both tls_cert_file and tls_key_file (or neither)")
        if self.tls_settings and not (self.url or "").startswith("rediss://"):
            # Silently ignoring them would send the password in clear text to a server meant to be TLS-only.
            got = "none is set (the embedded server has no TLS)" if self.url is None else "this one is not"
            raise ValueError(
                f"TLS settings ({', '.join(self.tls_settings)}) need a rediss:// url (redis.url or REDIS_URL); {got}"
            )
        return self
