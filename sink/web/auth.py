"""The web view's login: who may see the page, and how they prove it.

Two modes (``WebSinkConfig.auth``, see :class:`~sink.web.WebAuthConfig`):

- **passwords**: users with scrypt hashes (in the config, or ``name:hash,...`` in the variable ``users_env``
  names). ``POST /login`` checks a password in constant time and starts a session: a random token in an HttpOnly,
  SameSite=Strict cookie (Secure unless ``secure_cookies: false``, allowed on loopback only), kept in this
  process's memory until ``session_s`` has passed or ``POST /logout`` (a restart logs everyone out). Failed logins
  are counted per client address and per user name: ``max_failures`` within ``failure_window_s`` make further tries
  wait (429 with Retry-After), checked before any password is.
- **trusted proxy**: an authenticating reverse proxy (oauth2-proxy, Authelia, a web server's basic auth...) puts the
  user's name in ``trusted_proxy_header``; a request is let in when that header is set and the connection comes from
  one of ``trusted_proxies``. Anyone else, header or not, is refused. The proxy must overwrite (or strip) the header
  on every request it forwards, so that a client cannot send its own.

:class:`AuthMiddleware` guards every route of the app, its static files and API included: without a session a page
is redirected to ``/login`` and anything under ``/api/`` answered 401. Only ``GET /login`` (the form) and ``POST
/login`` are open, and only in the password mode.

``python -m sink.web.auth hash`` makes a hash: it reads the password from stdin (one line) or, on a terminal,
asks for it twice, and prints ``scrypt$n$r$p$salt$hash``.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import html
import ipaddress
import logging
import math
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sink.web import ScryptHash, WebAuthConfig, parse_password_hash

log = logging.getLogger(__name__)

DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**15, 8, 1
"""scrypt's cost for new hashes: 32 MiB and about 0.2 s per check on a small machine."""
MAX_PASSWORD = 1024
MAX_BODY = 4096
"""Largest login form read: a name and a password, URL-encoded."""
MAX_USER_HEADER = 256
SESSIONS_CAP = 10_000
"""Most sessions held; the oldest go first (only users who logged in make them)."""
FAILURES_CAP = 100_000
"""Most addresses and names whose failures are remembered: memory stays bounded whatever a client sends."""
CHECKS_AT_ONCE = 2
"""Password checks run at once (each takes scrypt's memory): more wait their turn."""
COOKIE_SECURE = "__Host-streamyolo-session"
"""With Secure: the __Host- prefix makes browsers refuse the cookie unless set over HTTPS, for this host, path /."""
COOKIE_PLAIN = "streamyolo-session"
NONE = "'none'"
OPEN = frozenset({("GET", "/login"), ("HEAD", "/login"), ("POST", "/login")})


# ---------------------------------------------------------------------------------------------------- hashes
def hash_password(password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """A new hash of ``password`` with a random salt: ``scrypt$n$r$p$salt$hash``."""
    salt = secrets.token_bytes(16)
    made = ScryptHash(n, r, p, salt, _scrypt(password, n, r, p, salt))
    parse_password_hash(str(made))  # the same checks as the config's: never print a hash it would refuse
    return str(made)


def verify_password(password: str, stored: ScryptHash) -> bool:
    """True when ``password`` has the stored hash; compared in constant time."""
    digest = _scrypt(password, stored.n, stored.r, stored.p, stored.salt, len(stored.digest))
    return hmac.compare_digest(digest, stored.digest)


def _scrypt(password: str, n: int, r: int, p: int, salt: bytes, length: int = 32) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=128 * n * r * p + (16 << 20)
    )


class UsersError(ValueError):
    """The users cannot be loaded: a variable missing or malformed, a name twice. Says which, never a hash."""


def load_users(cfg: WebAuthConfig, environ: Mapping[str, str]) -> dict[str, ScryptHash]:
    """The users of the password mode: the config's, and those of ``users_env`` (``name:hash,name:hash``)."""
    users = {name: parse_password_hash(text) for name, text in cfg.users.items()}
    if cfg.users_env is not None:
        raw = environ.get(cfg.users_env)
        if raw is None or not raw.strip():
            raise UsersError(
                f"auth.users_env names {cfg.users_env}, which is not set (or empty): set it to name:hash,... "
                "(hashes from `python -m sink.web.auth hash`)"
            )
        for i, item in enumerate(part.strip() for part in raw.split(",")):
            if not item:
                continue
            name, sep, text = item.partition(":")
            name = name.strip()
            if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}", name):
                raise UsersError(f"{cfg.users_env}: entry {i + 1} is not name:hash (name: letters, digits, _.-)")
            if name in users:
                raise UsersError(f"{cfg.users_env}: user {name!r} is given twice (there, or there and in users)")
            try:
                users[name] = parse_password_hash(text)
            except ValueError as exc:
                raise UsersError(f"{cfg.users_env}: user {name!r}: {exc}") from None
    if not users:
        raise UsersError("auth has no users: add some to users or to the variable users_env names")
    return users


# ---------------------------------------------------------------------------------------------------- state
class Limiter:
    """Failed logins per key (a client address, a user name) within a sliding window; thread-safe."""

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float]) -> None:
        self.max_failures, self.window_s, self._clock = max_failures, window_s, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def attempt(self, keys: Sequence[str]) -> float:
        """Seconds to wait before another try is heard; 0: go on, and the try counts as failed until
        :meth:`succeeded` says otherwise (so tries in flight at once count too)."""
        now = self._clock()
        with self._lock:
            wait = 0.0
            for key in keys:
                times = self._failures.get(key)
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                if times is not None and len(times) >= self.max_failures:
                    wait = max(wait, times[0] + self.window_s - now)
            if wait > 0:
                return wait
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > FAILURES_CAP:  # the least recently failed go first
                self._failures.popitem(last=False)
        return 0.0

    def succeeded(self, keys: Sequence[str]) -> None:
        """The try just made was right: it is no failure."""
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if times:
                    times.pop()
                if not times:
                    self._failures.pop(key, None)


class Sessions:
    """Logged-in sessions: a random token (the cookie) -> user, until it expires; only the tokens' hashes are kept."""

    def __init__(self, lifetime_s: float, clock: Callable[[], float]) -> None:
        self.lifetime_s, self._clock = lifetime_s, clock
        self._held: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, user: str) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            for key in [k for k, (_, until) in self._held.items() if until <= now]:
                del self._held[key]
            self._held[_digest(token)] = (user, now + self.lifetime_s)
            while len(self._held) > SESSIONS_CAP:
                self._held.popitem(last=False)
        return token

    def user(self, token: str) -> str | None:
        """The token's user; None when unknown or expired."""
        key = _digest(token)
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return None
            if held[1] <= self._clock():
                del self._held[key]
                return None
            return held[0]

    def end(self, token: str) -> None:
        with self._lock:
            self._held.pop(_digest(token), None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# ---------------------------------------------------------------------------------------------------- the guard
@dataclass(frozen=True)
class Outcome:
    """What a login attempt came to: a session token, or why not (and how long to wait)."""

    token: str | None = None
    wait_s: float = 0.0


class Auth:
    """The login of one web view: its users, sessions and failure counts, or its trusted proxy."""

    def __init__(
        self,
        cfg: WebAuthConfig,
        users: Mapping[str, ScryptHash] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.mode: Literal["password", "proxy"] = cfg.mode
        self.users = dict(users or {})
        if self.mode == "password" and not self.users:
            raise UsersError("the password mode needs users (see load_users)")
        self.sessions = Sessions(cfg.session_s, clock)
        self.limiter = Limiter(cfg.max_failures, cfg.failure_window_s, clock)
        self.cookie = COOKIE_SECURE if cfg.secure_cookies else COOKIE_PLAIN
        self._checks = threading.BoundedSemaphore(CHECKS_AT_ONCE)
        # An unknown name costs the same check as a known one: the time taken tells no one which names exist.
        self._dummy = self._make_dummy() if self.mode == "password" else None
        self._proxies = list(cfg.trusted_proxies)

    def user_of(self, scope: Scope) -> str | None:
        """The user a request comes from, or None: its session's, or its trusted proxy's header."""
        headers = Request(scope).headers
        if self.mode == "proxy":
            if not self._from_proxy(scope):
                return None
            name = headers.get(self.cfg.trusted_proxy_header or "", "").strip()
            return name if 0 < len(name) <= MAX_USER_HEADER and name.isprintable() else None
        token = Request(scope).cookies.get(self.cookie)
        return None if not token else self.sessions.user(token)

    def _from_proxy(self, scope: Scope) -> bool:
        client = scope.get("client")
        try:
            address = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            return False
        return address is not None and any(address in net for net in self._proxies)

    def login(self, user: str, password: str, address: str) -> Outcome:
        """Check a password (blocking: scrypt); a wait instead when too many tries failed lately."""
        keys = [f"address {address}", f"user {user}"]
        wait = self.limiter.attempt(keys)
        if wait > 0:
            log.warning("login of %r from %s refused: too many failures lately", user[:64], address)
            return Outcome(wait_s=wait)
        stored = self.users.get(user)
        with self._checks:
            ok = verify_password(password, stored or self._dummy or self._make_dummy()) and stored is not None
        if not ok:
            log.warning("failed login of %r from %s", user[:64], address)
            return Outcome()
        self.limiter.succeeded(keys)
        log.info("user %s logged in from %s", user, address)
        return Outcome(token=self.sessions.start(user))

    def _make_dummy(self) -> ScryptHash:
        """A hash of a random password, at the cost of the first user's (what a known name's check costs)."""
        some = next(iter(self.users.values()), None)
        n, r, p = (some.n, some.r, some.p) if some else (DEFAULT_N, DEFAULT_R, DEFAULT_P)
        return parse_password_hash(hash_password(secrets.token_hex(16), n=n, r=r, p=p))

    def set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            self.cookie, token, max_age=int(self.cfg.session_s), path="/", secure=self.cfg.secure_cookies,
            httponly=True, samesite="strict",
        )  # fmt: skip

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie, path="/", secure=self.cfg.secure_cookies, httponly=True, samesite="strict")


_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class AuthMiddleware:
    """Lets a request through only with a user (a session, or a trusted proxy's header), or to the login form."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = self.auth.user_of(scope)
        if user is not None or (self.auth.mode == "password" and (scope["method"], scope["path"]) in OPEN):
            scope["user"] = user
            await self.app(scope, receive, send)
            return
        response: Response
        if self.auth.mode == "proxy":
            response = PlainTextResponse(
                "this view takes requests only through its authenticating proxy", 401, headers=_HEADERS
            )
        elif scope["path"].startswith("/api/"):
            response = PlainTextResponse("log in first: POST /login", 401, headers=_HEADERS)
        else:
            response = RedirectResponse("/login", 303, headers=_HEADERS)
        await response(scope, receive, send)


# ---------------------------------------------------------------------------------------------------- routes
MESSAGE_SLOT = b'<p id="message" role="alert"></p>'


def login_routes(auth: Auth, page: bytes) -> list[Route]:
    """``GET /login`` (the form), ``POST /login``, ``POST /logout``; ``page`` is the form's HTML, with an empty
    ``<p id="message" role="alert"></p>`` where a message goes."""
    if MESSAGE_SLOT not in page:
        raise ValueError("the login page has no message slot")
    csp = login_csp(page)

    def render(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
        slot = b'<p id="message" role="alert">' + html.escape(message).encode() + b"</p>"
        body = page.replace(MESSAGE_SLOT, slot) if message else page
        return Response(body, status, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": csp, **_HEADERS, **(headers or {})})  # fmt: skip

    def form(_: Request) -> Response:
        return render("", 200)

    async def submit(request: Request) -> Response:
        if not _same_origin(request):
            return PlainTextResponse("login from another site refused", 403, headers=_HEADERS)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return PlainTextResponse("expected a form (application/x-www-form-urlencoded)", 415, headers=_HEADERS)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return PlainTextResponse("login form too large", 413, headers=_HEADERS)
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        user, password = fields.get("user", "").strip(), fields.get("password", "")
        if not user or not password or len(user) > 128 or len(password) > MAX_PASSWORD:
            return render("give a user name and a password", 400)
        address = request.client.host if request.client else "unknown"
        outcome = await run_in_threadpool(auth.login, user, password, address)
        if outcome.wait_s > 0:
            wait = math.ceil(outcome.wait_s)
            return render(f"too many failed logins: try again in {wait} s", 429, {"Retry-After": str(wait)})
        if outcome.token is None:
            return render("wrong user name or password", 401)
        response = RedirectResponse("/", 303, headers=_HEADERS)
        auth.set_cookie(response, outcome.token)
        return response

    def logout(request: Request) -> Response:
        token = request.cookies.get(auth.cookie)
        if token:
            auth.sessions.end(token)
        log.info("user %s logged out", request.scope.get("user"))
        response = RedirectResponse("/login", 303, headers=_HEADERS)
        auth.clear_cookie(response)
        return response

    return [
        Route("/login", form, methods=["GET"]),
        Route("/login", submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


def login_csp(page: bytes) -> str:
    """The login page's Content-Security-Policy: its one inline stylesheet by hash (so the page needs no other file,
    and only the form is open), no script at all, forms to this origin only."""
    styles = re.findall(rb"<style>(.*?)</style>", page, re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in styles)
    return (
        f"default-src 'none'; style-src {hashes or NONE}; script-src 'none'; img-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _same_origin(request: Request) -> bool:
    """A form posted from a page of this host (or by a client sending no Origin): not from another site's page."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")


# ---------------------------------------------------------------------------------------------------- the CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sink.web.auth", description="Password hashes for the web view's users (auth.users)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser(
        "hash", help="print a hash of a password read from stdin (one line), or asked for twice on a terminal"
    )
    made.add_argument("--cost", type=int, default=15, choices=range(14, 21), metavar="14..20",
                      help="scrypt's n as a power of two (default 15: 32 MiB, about 0.2 s per check)")  # fmt: skip
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("no password given (an empty one is refused)", file=sys.stderr)
        return 1
    if len(password) > MAX_PASSWORD:
        print(f"a password of more than {MAX_PASSWORD} characters is refused at login", file=sys.stderr)
        return 1
    print(hash_password(password, n=2**args.cost))
    return 0


if __name__ == "__main__":
    sys.exit(main())
