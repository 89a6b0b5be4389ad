"""The web view: a live page of the streams, served by a sink of kind ``web``.

Without a tracker it shows one stream at a time: its latest frame with its boxes drawn, recent detections, fps and
end-to-end latency. With ``tracker`` (the name of a tracker sink) it shows every camera in a grid, each tile the
latest frame with its tracked boxes (track id and label) and each track's trail, and the tracker's events, newest
first, each with its best snapshot and a clip made from the frames still kept. With ``auth`` it asks for a login
(or trusts an authenticating proxy's header) before it shows anything; it must have one to listen beyond loopback.

This module declares the web sink's settings and registers its kind (see ``common.plugins``); it imports nothing
but the settings, so the config can be built without a web server. The rest loads only when the sink runs:

- ``view``: :class:`~sink.web.view.View`, what the followers saw per stream (results, tracks, events), its rates;
- ``app``: :func:`~sink.web.app.create_app`, the Starlette app (the page, its static files, the JSON/JPEG/MP4 API);
- ``auth``: the login (password hashes, sessions, rate limits, the trusted proxy) and its middleware;
  ``python -m sink.web.auth hash`` makes a password hash;
- ``drawing``: tracked boxes, trails and snapshots drawn on frames;
- ``runner``: :func:`~sink.web.runner.run`, the follower threads and uvicorn in-process;
- ``static/``: the pages' HTML, CSS and JS, served as they are.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, IPvAnyNetwork, model_validator

from common.plugins import SINKS
from common.settings import Name, SinkSettings, Strict

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})

SCRYPT_N = (2**14, 2**20)
"""Bounds of a hash's scrypt cost n (a power of two): below, a stolen hash is cheap to attack; above, one login
would need over a GiB of memory."""
SCRYPT_R = (1, 32)
SCRYPT_P = (1, 16)


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address or name: only this machine can reach a server bound to it."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ScryptHash:
    """A parsed password hash: ``scrypt$n$r$p$salt$hash`` (salt and hash in base64)."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        salt, digest = (base64.b64encode(b).decode() for b in (self.salt, self.digest))
        return f"scrypt${self.n}${self.r}${self.p}${salt}${digest}"


def parse_password_hash(text: str) -> ScryptHash:
    """A hash string as made by ``python -m sink.web.auth hash``; ValueError saying what is wrong (never the hash)."""
    parts = text.strip().split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a password hash: expected scrypt$n$r$p$salt$hash (python -m sink.web.auth hash)")
    try:
        n, r, p = (int(v) for v in parts[1:4])
        salt, digest = (base64.b64decode(v, validate=True) for v in parts[4:6])
    except (ValueError, binascii.Error):
        raise ValueError("not a password hash: n, r and p must be numbers, salt and hash base64") from None
    if not (SCRYPT_N[0] <= n <= SCRYPT_N[1] and n & (n - 1) == 0):
        raise ValueError(f"password hash: n must be a power of two from {SCRYPT_N[0]} to {SCRYPT_N[1]}")
    if not (SCRYPT_R[0] <= r <= SCRYPT_R[1] and SCRYPT_P[0] <= p <= SCRYPT_P[1]):
        raise ValueError(f"password hash: r must be within {SCRYPT_R}, p within {SCRYPT_P}")
    if len(salt) < 16 or len(digest) < 32:
        raise ValueError("password hash: the salt needs 16 bytes or more, the hash 32 or more")
    return ScryptHash(n, r, p, salt, digest)


def _check_hash(text: str) -> str:
    parse_password_hash(text)
    return text


PasswordHash = Annotated[str, Field(max_length=512), AfterValidator(_check_hash)]


class WebAuthConfig(Strict):
    """Who may see the page: users with passwords (``users``, ``users_env``), or whoever an authenticating reverse
    proxy names in a header (``trusted_proxy_header``, from ``trusted_proxies`` only). One of the two."""

    users: dict[Name, PasswordHash] = Field(
        default_factory=dict,
        max_length=1000,
        description="User name -> password hash, made by `python -m sink.web.auth hash` (never the password).",
    )
    users_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Environment variable holding users as 'name:hash,name:hash' (read when the sink starts), "
        "e.g. STREAMYOLO_WEB_USERS: keeps the hashes out of the config file.",
    )
    session_s: float = Field(
        12 * 3600, ge=60, le=30 * 86_400, description="A login lasts this long; then the page asks again."
    )
    secure_cookies: bool = Field(
        True,
        description="Session cookies only over HTTPS (a TLS proxy in front); false is refused unless host is "
        "loopback (a browser on the same machine, over plain HTTP).",
    )
    max_failures: int = Field(
        5, ge=1, le=1000, description="Failed logins per client address, and per user, before further tries wait."
    )
    failure_window_s: float = Field(60, ge=1, le=86_400, description="... within this many seconds.")
    trusted_proxy_header: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9\-]{1,64}$",
        description="Header naming the user, set by an authenticating reverse proxy (e.g. X-Forwarded-User); "
        "accepted only on connections from trusted_proxies. No login page then.",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        max_length=100,
        description="Addresses (or networks) of the proxies whose trusted_proxy_header is believed.",
    )

    @property
    def mode(self) -> Literal["password", "proxy"]:
        return "proxy" if self.trusted_proxy_header else "password"

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        passwords = bool(self.users) or self.users_env is not None
        if passwords and self.trusted_proxy_header:
            raise ValueError(
                "give either users (or users_env) for a login page, or trusted_proxy_header for a proxy's login; "
                "not both"
            )
        if not passwords and not self.trusted_proxy_header:
            raise ValueError(
                "auth needs users (name: hash from `python -m sink.web.auth hash`), users_env (a variable "
                "holding name:hash,...), or trusted_proxy_header (with trusted_proxies)"
            )
        if self.trusted_proxy_header and not self.trusted_proxies:
            raise ValueError(
                f"trusted_proxy_header {self.trusted_proxy_header!r} needs trusted_proxies: the addresses of the "
                "proxy that sets it (anyone else could send it)"
            )
        if self.trusted_proxies and not self.trusted_proxy_header:
            raise ValueError("trusted_proxies is only used with trusted_proxy_header: set it, or drop trusted_proxies")
        return self


class WebSinkConfig(SinkSettings):
    """A live web view: each stream's latest frame with its boxes drawn, recent detections, fps and latency; with a
    tracker, a grid of every camera with its tracks, and the tracker's events with snapshots and clips.

    Not a consumer group: it follows the result (and tracks and events) streams with plain XREAD (like ``sink
    tail``), so it never takes anything from the other sinks, and nothing waits on it."""

    kind: Literal["web"] = "web"
    host: str = Field(
        "127.0.0.1",
        pattern=r"^[A-Za-z0-9.:\-]{1,253}$",
        description="Address to serve on; beyond loopback (e.g. 0.0.0.0) only with auth: the page shows cameras.",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port to serve on.")
    history: int = Field(50, ge=1, le=10_000, description="Recent detections kept (and listed) per stream.")
    window_s: float = Field(10.0, ge=1, le=3600, description="fps and latency are over the results of this window.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the frames served.")
    block_ms: int = Field(1000, ge=1, le=600_000, description="Longest blocking read of the followed streams.")
    rescan_s: float = Field(5.0, gt=0, le=3600, description="How often stream patterns are re-resolved.")
    tracker: Name | None = Field(
        None,
        description="Tracker sink whose tracks and events are shown (a grid of the cameras, an events list); "
        "None: results only.",
    )
    trail: int = Field(20, ge=0, le=500, description="Recent box centres drawn as a trail behind each track.")
    events: int = Field(100, ge=1, le=10_000, description="Recent events kept (and listed) per camera.")
    clip_pre_roll_s: float = Field(2.0, ge=0, le=600, description="A clip starts this long before its track did.")
    clip_post_roll_s: float = Field(2.0, ge=0, le=600, description="... and ends this long after its event.")
    clip_max_s: float = Field(
        60.0, ge=1, le=3600, description="Longest clip: a longer span keeps the part that ends at the event."
    )
    clip_max_frames: int = Field(1500, ge=2, le=100_000, description="Most frames in one clip (the latest kept).")
    auth: WebAuthConfig | None = Field(
        None,
        description="Login (users and password hashes) or a trusted proxy's header; needed beyond loopback.",
    )

    @model_validator(mode="after")
    def _login_beyond_loopback(self) -> Self:
        if self.auth is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not a loopback address, and the page shows every camera: set auth "
                "(users_env: STREAMYOLO_WEB_USERS with name:hash from `python -m sink.web.auth hash`, or "
                "trusted_proxy_header behind an authenticating proxy), or serve on host 127.0.0.1"
            )
        if self.auth is not None and not self.auth.secure_cookies and not is_loopback(self.host):
            raise ValueError(
                f"auth.secure_cookies false sends the session cookie in clear text: refused on host {self.host!r} "
                "(serve HTTPS through a TLS proxy and keep secure_cookies true, or serve on 127.0.0.1)"
            )
        return self


SINKS.register(WebSinkConfig, "sink.web.runner:run")
