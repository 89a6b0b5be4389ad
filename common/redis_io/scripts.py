"""Server-side scripts run by hash, many in one round trip, on one server or a cluster.

A script is sent once (SCRIPT LOAD) and then run by its SHA1 (EVALSHA): a node that does not know it (restarted, or
a replica promoted since) answers NOSCRIPT, and the calls it refused are run again after loading it there. redis-py
does this for a plain pipeline, not for a cluster's: hence one function for both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from common.redis_io.connection import Client

Call = tuple[Sequence[str], Sequence[Any]]
"""A script's KEYS and ARGV for one run."""


def run_script(client: Client, script: str, calls: Sequence[Call]) -> list[Any]:
    """Run ``script`` once per call, pipelined (no transaction: each run is atomic by itself); per call its reply,
    or the error the server answered it with (as an exception value). Raises on a failed round trip."""
    sha = hashlib.sha1(script.encode()).hexdigest()
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for i in todo:
            keys, args = calls[i]
            pipe.evalsha(sha, len(keys), *keys, *args)
        answered = pipe.execute(raise_on_error=False)
        missing = []
        for i, reply in zip(todo, answered, strict=True):
            replies[i] = reply
            if isinstance(reply, NoScriptError):
                missing.append(i)
        if not missing or attempt:
            break
        client.script_load(script)  # on a cluster: on every primary
        todo = missing
    return replies
