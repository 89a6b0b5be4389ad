"""The web view's login without a server: password hashes and the hash command, the users from the environment,
every route refused without a session, wrong passwords, rate limits, expiry, logout, the trusted proxy's header, and
the config refusing a view beyond loopback without a login."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from common.config import ConfigError, parse_config
from common.wire import Frame
from sink.web import ScryptHash, WebAuthConfig, WebSinkConfig, is_loopback, parse_password_hash
from sink.web import auth as auth_module
from sink.web.app import create_app
from sink.web.auth import COOKIE_PLAIN, COOKIE_SECURE, Auth, UsersError, hash_password, load_users, main
from sink.web.runner import _auth
from sink.web.view import View
from tests.conftest import ROOT

N = 2**14  # the least cost a hash may have: the tests check many passwords
ALICE = hash_password("correct horse", n=N)
BOB = hash_password("battery staple", n=N)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def no_frame(stream: str, frame_id: str) -> Frame | None:
    return None


def password_app(clock: Clock, **settings: object) -> tuple[Auth, Starlette]:
    cfg = WebAuthConfig.model_validate({"users": {"alice": ALICE, "bob": BOB}, **settings})
    auth = Auth(cfg, {name: parse_password_hash(h) for name, h in cfg.users.items()}, clock=clock)
    return auth, create_app(View(window_s=10, history=10), no_frame, auth=auth)


def client(app: Starlette, address: str = "192.0.2.10") -> TestClient:
    return TestClient(app, base_url="https://testserver", follow_redirects=False, client=(address, 40000))


def log_in(http: TestClient, user: str = "alice", password: str = "correct horse") -> int:
    return http.post("/login", data={"user": user, "password": password}).status_code


# ---------------------------------------------------------------------------------------------------- hashes
def test_a_hash_verifies_its_password_only_and_every_hash_has_its_own_salt() -> None:
    parsed = parse_password_hash(ALICE)
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", ALICE)
    assert auth_module.verify_password("correct horse", parsed)
    assert not auth_module.verify_password("correct horse ", parsed)
    assert not auth_module.verify_password("", parsed)
    again = parse_password_hash(hash_password("correct horse", n=N))
    assert again.salt != parsed.salt and again.digest != parsed.digest
    assert str(parsed) == ALICE  # parsed and written back, unchanged


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("correct horse", "not a password hash"),
        ("bcrypt$16384$8$1$AAAA$AAAA", "not a password hash"),
        ("scrypt$16000$8$1$" + "A" * 24 + "$" + "A" * 44, "power of two"),
        ("scrypt$1024$8$1$" + "A" * 24 + "$" + "A" * 44, "power of two"),
        ("scrypt$16384$8$1$QUFB$" + "A" * 44, "salt needs 16 bytes"),
        ("scrypt$16384$8$1$!!!$" + "A" * 44, "base64"),
        ("scrypt$16384$99$1$" + "A" * 24 + "$" + "A" * 44, "r must be"),
    ],
)
def test_a_malformed_hash_is_refused_saying_why_but_never_showing_it(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as err:
        parse_password_hash(text)
    assert text not in str(err.value)


def test_the_hash_command_reads_the_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret pass\n"))
    assert main(["hash", "--cost", "14"]) == 0
    made = capsys.readouterr().out.strip()
    assert auth_module.verify_password("s3cret pass", parse_password_hash(made))
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["hash"]) == 1
    assert "empty one is refused" in capsys.readouterr().err


def test_python_m_sink_web_auth_hash_prints_a_hash_the_config_takes() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "sink.web.auth", "hash"], input="pa55 word\n", capture_output=True,
        text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = done.stdout.strip()
    assert made.startswith("scrypt$32768$8$1$") and done.stderr == ""
    assert auth_module.verify_password("pa55 word", parse_password_hash(made))
    WebAuthConfig(users={"carol": made})


# ---------------------------------------------------------------------------------------------------- users
def test_users_come_from_the_config_and_from_the_variable_users_env_names() -> None:
    cfg = WebAuthConfig(users={"alice": ALICE}, users_env="WEB_USERS")
    users = load_users(cfg, {"WEB_USERS": f" bob:{BOB} , carol.c:{ALICE},"})
    assert sorted(users) == ["alice", "bob", "carol.c"] and str(users["bob"]) == BOB
    problems = {
        "": "WEB_USERS, which is not set",
        "bob": "entry 1 is not name:hash",
        f"b@d:{BOB}": "entry 1 is not name:hash",
        f"bob:{BOB},alice:{BOB}": "user 'alice' is given twice",
        "bob:scrypt$3$8$1$QUFB$QUFB": "user 'bob': password hash: n must be a power of two",
    }
    for value, why in problems.items():
        with pytest.raises(UsersError, match=re.escape(why)) as err:
            load_users(cfg, {"WEB_USERS": value} if value else {})
        assert BOB not in str(err.value)


def test_the_runner_stops_at_start_when_the_users_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = WebSinkConfig(name="v", auth=WebAuthConfig(users_env="STREAMYOLO_TEST_WEB_USERS"))
    monkeypatch.delenv("STREAMYOLO_TEST_WEB_USERS", raising=False)
    with pytest.raises(UsersError, match="STREAMYOLO_TEST_WEB_USERS, which is not set"):
        _auth(sink)
    monkeypatch.setenv("STREAMYOLO_TEST_WEB_USERS", f"alice:{ALICE}")
    made = _auth(sink)
    assert made is not None and list(made.users) == ["alice"]
    assert _auth(WebSinkConfig(name="v")) is None


# ---------------------------------------------------------------------------------------------------- the guard
API = [
    "/api/me", "/api/streams", "/api/streams/cam1/detections", "/api/streams/cam1/frame.jpg",
    "/api/streams/cam1/tracks.jpg", "/api/streams/cam1/counts", "/api/events", "/api/events/cam1/t:cam1:1:0/clip.mp4",
    "/api/events/cam1/t:cam1:1:0/snapshot.jpg", "/api/nope",
]  # fmt: skip
PAGES = ["/", "/static/view.js", "/static/view.css", "/static/index.html", "/static/login.html", "/nope"]


def test_every_route_but_the_login_form_is_refused_without_a_session() -> None:
    _, app = password_app(Clock())
    with client(app) as http:
        for path in API:
            response = http.get(path)
            assert response.status_code == 401 and response.text == "log in first: POST /login", path
            assert response.headers["cache-control"] == "no-store"
        for path in PAGES:
            response = http.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/login", path
        assert http.post("/logout").headers["location"] == "/login"
        assert http.post("/api/streams").status_code == 401
        form = http.get("/login")
        assert form.status_code == 200 and 'action="/login"' in form.text and "<script" not in form.text
        csp = form.headers["content-security-policy"]
        assert "script-src 'none'" in csp and "form-action 'self'" in csp and "style-src 'sha256-" in csp
        assert "unsafe" not in csp
        http.cookies.set(COOKIE_SECURE, "made-up-token")  # a token the server never gave
        assert http.get("/api/streams").status_code == 401


def test_a_login_sets_a_strict_http_only_secure_cookie_that_opens_every_route() -> None:
    _, app = password_app(Clock(), session_s=3600)
    with client(app) as http:
        response = http.post("/login", data={"user": "alice", "password": "correct horse"})
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_SECURE}=")
        for attribute in ("HttpOnly", "Max-Age=3600", "Path=/", "SameSite=strict", "Secure"):
            assert attribute.lower() in cookie.lower(), (attribute, cookie)
        assert http.get("/api/me").json() == {"user": "alice", "auth": "password", "logout": True}
        assert http.get("/api/streams").status_code == 200 and http.get("/").status_code == 200
        assert http.get("/static/view.js").status_code == 200
        assert http.get("/api/streams/cam9/frame.jpg").status_code == 404  # let through; there is no such stream


def test_plain_cookies_where_secure_cookies_is_off() -> None:
    _, app = password_app(Clock(), secure_cookies=False)
    with TestClient(app, follow_redirects=False) as http:
        response = http.post("/login", data={"user": "bob", "password": "battery staple"})
        assert response.headers["set-cookie"].startswith(f"{COOKIE_PLAIN}=")
        assert "secure" not in response.headers["set-cookie"].lower()
        assert http.get("/api/me").json()["user"] == "bob"


def test_a_wrong_password_or_an_unknown_user_is_one_answer_and_costs_one_check(monkeypatch: pytest.MonkeyPatch) -> None:
    _, app = password_app(Clock())
    checked: list[int] = []
    verify = auth_module.verify_password

    def counted(password: str, stored: ScryptHash) -> bool:
        checked.append(stored.n)
        return verify(password, stored)

    monkeypatch.setattr(auth_module, "verify_password", counted)
    with client(app) as http:
        answers = [http.post("/login", data={"user": user, "password": "nope"}) for user in ("alice", "mallory")]
        assert [a.status_code for a in answers] == [401, 401]
        assert answers[0].text == answers[1].text and "wrong user name or password" in answers[0].text
        assert checked == [N, N]  # the unknown name was checked against a stand-in hash of the same cost
        assert "set-cookie" not in answers[0].headers
        assert http.get("/api/streams").status_code == 401
        assert log_in(http, "alice", "") == 400
        assert http.post("/login", content=b"user=alice", headers={"content-type": "text/plain"}).status_code == 415
        huge = {"user": "alice", "password": "x" * 5000}
        assert http.post("/login", data=huge).status_code == 413
        evil = http.post("/login", data={"user": "alice", "password": "correct horse"},
                         headers={"origin": "https://evil.example"})  # fmt: skip
        assert evil.status_code == 403 and "set-cookie" not in evil.headers


def test_failures_are_limited_per_address_and_per_user_then_wait_out_the_window() -> None:
    clock = Clock()
    _, app = password_app(clock, max_failures=3, failure_window_s=60)
    with client(app, "192.0.2.1") as one, client(app, "192.0.2.2") as two, client(app, "192.0.2.3") as three:
        assert [log_in(one, "alice", f"guess {i}") for i in range(3)] == [401, 401, 401]
        refused = one.post("/login", data={"user": "alice", "password": "correct horse"})  # right, but too late
        assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
        assert "too many failed logins" in refused.text and "set-cookie" not in refused.headers
        assert log_in(one, "bob", "battery staple") == 429  # the address is held, whatever the user
        assert log_in(two, "alice", "correct horse") == 429  # ... and the user, whatever the address
        assert log_in(two, "bob", "battery staple") == 303  # another address, another user: heard
        clock.now += 30
        assert one.post("/login", data={"user": "bob", "password": "x"}).headers["retry-after"] == "30"
        clock.now += 30.5
        assert log_in(one, "alice", "correct horse") == 303
        # Successes do not count: a user logging in often is never held.
        assert all(log_in(three, "bob", "battery staple") == 303 for _ in range(5))


def test_a_session_expires_and_a_logout_ends_it() -> None:
    clock = Clock()
    auth, app = password_app(clock, session_s=600)
    with client(app) as http:
        assert log_in(http) == 303
        clock.now += 599
        assert http.get("/api/streams").status_code == 200
        clock.now += 2
        assert http.get("/api/streams").status_code == 401
        assert http.get("/").headers["location"] == "/login"
        assert log_in(http) == 303
        token = http.cookies.get(COOKIE_SECURE)
        assert token and auth.sessions.user(token) == "alice"
        out = http.post("/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert COOKIE_SECURE in out.headers["set-cookie"] and "max-age=0" in out.headers["set-cookie"].lower()
        assert auth.sessions.user(token) is None
        http.cookies.set(COOKIE_SECURE, token)  # the old cookie, kept by a client that ignores the logout
        assert http.get("/api/streams").status_code == 401


def test_a_trusted_proxy_names_the_user_and_nobody_else_can() -> None:
    cfg = WebAuthConfig(trusted_proxy_header="X-Forwarded-User", trusted_proxies=["10.1.0.0/16", "::1"])  # type: ignore[list-item]
    app = create_app(View(window_s=10, history=10), no_frame, auth=Auth(cfg))
    header = {"X-Forwarded-User": "dana"}
    with client(app, "10.1.2.3") as proxy, client(app, "::1") as local_proxy, client(app, "10.2.0.1") as other:
        assert proxy.get("/api/me", headers=header).json() == {"user": "dana", "auth": "proxy", "logout": False}
        assert proxy.get("/", headers=header).status_code == 200
        assert local_proxy.get("/api/streams", headers=header).status_code == 200
        for bad in ({}, {"X-Forwarded-User": ""}, {"X-Forwarded-User": "x" * 300}):
            assert proxy.get("/api/streams", headers=bad).status_code == 401
        for path in ("/api/streams", "/", "/static/view.js", "/login"):
            refused = other.get(path, headers=header)
            assert refused.status_code == 401 and "authenticating proxy" in refused.text, path
        assert other.post("/login", data={"user": "dana", "password": "x"}, headers=header).status_code == 401
        assert proxy.get("/login", headers=header).status_code == 404  # no login page in this mode


# ---------------------------------------------------------------------------------------------------- config
def test_the_config_refuses_a_view_beyond_loopback_without_a_login() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.10", "example.org", "10.0.0.1"))
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(ConfigError) as err:
            parse_config(f'sinks: [{{kind: web, name: view, host: "{host}"}}]', source="s.yaml", environ={})
        (problem,) = err.value.problems
        assert problem.startswith("s.yaml:1: sinks[0].web:") and f"host '{host}' is not a loopback address" in problem
        assert "set auth" in problem and "users_env" in problem and "host 127.0.0.1" in problem
    ok = parse_config(
        textwrap.dedent("""\
        sinks:
          - {kind: web, name: a, host: 0.0.0.0, auth: {users_env: STREAMYOLO_WEB_USERS}}
          - {kind: web, name: b, host: "::", auth: {trusted_proxy_header: X-User, trusted_proxies: [10.0.0.5]}}
          - {kind: web, name: c, host: 127.0.0.1, auth: {users_env: U, secure_cookies: false}}
          - {kind: web, name: d, host: localhost}
        """),
        environ={},
    )
    a = ok.sink("a")
    assert isinstance(a, WebSinkConfig) and a.auth is not None and a.auth.mode == "password"
    assert a.auth.secure_cookies and a.auth.max_failures == 5 and a.auth.session_s == 12 * 3600


@pytest.mark.parametrize(
    ("auth", "why"),
    [
        ("{users_env: U, secure_cookies: false}", "secure_cookies false sends the session cookie in clear text"),
        ("{}", "auth needs users"),
        ("{users_env: U, trusted_proxy_header: X-User, trusted_proxies: [10.0.0.1]}", "not both"),
        ("{trusted_proxy_header: X-User}", "needs trusted_proxies"),
        ("{users_env: U, trusted_proxies: [10.0.0.1]}", "only used with trusted_proxy_header"),
        ("{users: {alice: not-a-hash}}", "not a password hash"),
        ("{trusted_proxy_header: X-User, trusted_proxies: [not-an-address]}", "trusted_proxies"),
        ("{users_env: U, session_s: 10}", "session_s"),
        ("{users_env: U, max_failures: 0}", "max_failures"),
    ],
)
def test_the_config_refuses_a_login_that_cannot_work(auth: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_config(f"sinks: [{{kind: web, name: view, host: 0.0.0.0, auth: {auth}}}]", environ={})
