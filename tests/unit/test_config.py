from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.config import ConfigError, load_config, parse_config
from tests.conftest import ROOT

GOOD = textwrap.dedent(
    """\
    redis:
      url: redis://127.0.0.1:6379/0
    streams: {prefix: lab}
    ingest:
      cameras:
        - name: door
          source: {kind: file, path: videos/door.mp4, loop: true}
        - name: yard
          source: {kind: synthetic, seed: 3}
          every_n: 2
    detector:
      pools:
        - name: main
          streams: ["door", "y*"]
          model: {classes: names.txt, weights: model/w.h5}
    sinks:
      - {kind: jsonl, name: log, path: out/results.jsonl}
    """
)


def errors(text: str, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="stack.yaml", environ=environ)
    return info.value.problems


def test_a_full_config_loads_with_paths_resolved_against_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "stack.yaml"
    path.write_text(GOOD)
    cfg = load_config(path, environ={})
    assert cfg.redis.url == "redis://127.0.0.1:6379/0"
    assert [c.name for c in cfg.ingest.cameras] == ["door", "yard"]
    assert cfg.ingest.cameras[0].source.path == tmp_path / "videos/door.mp4"
    assert cfg.ingest.cameras[1].every_n == 2
    pool = cfg.pool("main")
    assert pool.model.classes == tmp_path / "names.txt"
    assert pool.model.weights == tmp_path / "model/w.h5"
    assert pool.engine.kind == "tensorflow"
    assert cfg.sink("log").path == tmp_path / "out/results.jsonl"


def test_an_empty_file_is_a_valid_stack_with_defaults() -> None:
    cfg = parse_config("", environ={})
    assert cfg.redis.url is None
    assert cfg.streams.prefix == "yolo"


def test_each_error_names_the_field_and_its_line() -> None:
    bad = GOOD.replace("every_n: 2", "every_n: 0").replace("{prefix: lab}", "{prefix: lab, colour: red}")
    problems = errors(bad, environ={})
    assert "stack.yaml:10: ingest.cameras[1].every_n: Input should be greater than or equal to 1 (got 0)" in problems
    assert "stack.yaml:3: streams.colour: Extra inputs are not permitted" in problems
    assert len(problems) == 2


def test_a_missing_field_points_at_its_parent_and_an_unknown_kind_is_named() -> None:
    text = "detector:\n  pools:\n    - name: p\n      engine: {kind: openvino}\n"
    problems = errors(text, environ={})
    assert any(p.startswith("stack.yaml:3: detector.pools[0].model: Field required") for p in problems)
    assert any("stack.yaml:4: detector.pools[0].engine" in p and "openvino" in p for p in problems)


def test_yaml_syntax_errors_and_non_mappings_are_config_errors() -> None:
    assert errors("redis:\n  url: [unclosed\n", environ={})[0].startswith("stack.yaml:3: not valid YAML")
    assert errors("- a list\n", environ={})[0].startswith("stack.yaml:1: the file must be a YAML mapping")


def test_socket_timeout_must_exceed_every_blocking_read() -> None:
    text = GOOD.replace("model: {classes", "block_ms: 40000\n      model: {classes")
    assert any(
        "socket_timeout_s (10.0) must exceed the longest block_ms (40000 ms)" in p for p in errors(text, environ={})
    )


def test_duplicate_names_are_refused() -> None:
    text = GOOD.replace("name: yard", "name: door")
    assert any("duplicate camera names: door" in p for p in errors(text, environ={}))


def test_environment_overrides_the_file() -> None:
    env = {"REDIS_URL": "unix:///run/redis.sock", "STREAMYOLO__STREAMS__FRAMES_MAXLEN": "500"}
    cfg = parse_config(GOOD, environ=env)
    assert cfg.redis.url == "unix:///run/redis.sock"
    assert cfg.streams.frames_maxlen == 500


def test_a_bad_environment_override_names_the_variable() -> None:
    problems = errors(GOOD, environ={"STREAMYOLO__STREAMS__FRAMES_MAXLEN": "-3"})
    assert problems == [
        "environment STREAMYOLO__STREAMS__FRAMES_MAXLEN: streams.frames_maxlen: "
        "Input should be greater than or equal to 10 (got -3)"
    ]


def test_an_override_picks_an_item_of_a_list_by_its_name() -> None:
    env = {
        "STREAMYOLO__DETECTOR__POOLS__MAIN__MAX_BATCH": "16",
        "STREAMYOLO__INGEST__CAMERAS__YARD__EVERY_N": "5",
    }
    cfg = parse_config(GOOD, environ=env)
    assert cfg.detector.pools[0].max_batch == 16
    assert [c.every_n for c in cfg.ingest.cameras] == [1, 5]
    with pytest.raises(ConfigError, match="POOLS__GATE__MAX_BATCH: no item named 'gate' in that list"):
        parse_config(GOOD, environ={"STREAMYOLO__DETECTOR__POOLS__GATE__MAX_BATCH": "4"})


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("service", ["ingest", "detector", "sink"])
def test_check_config_exits_2_with_one_line_per_error_and_0_when_valid(service: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("streams:\n  prefix: ok\n  frames_maxlen: 1\n")
    run = subprocess.run(
        [sys.executable, "-m", service, "--config", str(bad), "--check-config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert f"config error: {bad}:3: streams.frames_maxlen: Input should be greater than or equal to 10" in run.stderr
    chosen = ["--sink", "view"] if service == "sink" else []  # the local stack has several sinks: name one
    good = subprocess.run(
        [sys.executable, "-m", service, "--config", str(ROOT / "compose/local.yaml"), *chosen, "--check-config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout


@pytest.mark.parametrize("service", ["ingest", "detector", "sink", "common.stack.launcher"])
def test_every_service_has_help(service: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", service, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0
    assert "--config" in run.stdout


# ---------------------------------------------------------------------------------------------------- TLS, secrets
TLS = (
    "redis:\n  url: {url}\n  tls_ca_file: pki/ca.crt\n  tls_cert_file: pki/client.crt\n  tls_key_file: pki/client.key\n"
)


def test_tls_settings_load_with_a_rediss_url_and_their_paths_resolve_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "stack.yaml"
    path.write_text(TLS.format(url="rediss://svc:pw@redis.example:6380/0"))
    redis_cfg = load_config(path, environ={}).redis
    assert redis_cfg.tls_ca_file == tmp_path / "pki/ca.crt"
    assert (redis_cfg.tls_cert_file, redis_cfg.tls_key_file) == (
        tmp_path / "pki/client.crt",
        tmp_path / "pki/client.key",
    )
    assert redis_cfg.tls_check_hostname is True
    # The URL may come from the environment (compose): the file holds the certificates.
    cfg = parse_config("redis: {tls_ca_file: ca.crt}\n", environ={"REDIS_URL": "rediss://h:6380"})
    assert cfg.redis.tls_ca_file is not None and cfg.redis.tls_ca_file.name == "ca.crt"


@pytest.mark.parametrize("url", ["redis://svc:pw@h:6379/0", "unix:///run/redis.sock", None])
def test_tls_settings_are_refused_without_a_rediss_url(url: str | None) -> None:
    text = TLS.format(url=url) if url else TLS.replace("  url: {url}\n", "")
    (problem,) = errors(text, environ={})
    assert (
        "stack.yaml:2: redis: Value error, TLS settings (tls_ca_file, tls_cert_file, tls_key_file) need a " in problem
    )
    assert "rediss:// url" in problem and "pw" not in problem
    (problem,) = errors("redis: {url: 'redis://h', tls_check_hostname: false}\n", environ={})
    assert "(tls_check_hostname) need a rediss:// url" in problem


def test_mutual_tls_needs_both_the_certificate_and_its_key() -> None:
    for dropped in ("  tls_key_file: pki/client.key\n", "  tls_cert_file: pki/client.crt\n"):
        text = TLS.format(url="rediss://h").replace(dropped, "")
        assert any("needs both tls_cert_file and tls_key_file" in p for p in errors(text, environ={}))


def test_config_errors_never_show_a_password_or_a_header() -> None:
    secret = "hunter2-s3cret"
    bad = [
        (f"redis: {{url: 'http://svc:{secret}@h:6379'}}\n", {}, "(got 'http://svc:***@h:6379')"),
        ("", {"REDIS_URL": f"redi://svc:{secret}@h"}, "environment REDIS_URL: redis.url:"),
        (f"redis: {{url: 'redis://svc:{secret}@h', tls_ca_file: ca.crt}}\n", {}, "redis: Value error, TLS"),
        (f"sinks: [{{kind: postgres, name: p, url: 'mysql://u:{secret}@h/db'}}]\n", {}, "'mysql://u:***@h/db'"),
        (
            "ingest: {cameras: [{name: c, source: {kind: rtsp, url: 'http://admin:" + secret + "@cam/1'}}]}\n",
            {},
            "'http://admin:***@cam/1'",
        ),
        (
            "sinks: [{kind: alert, name: a, rules: [{name: r, actions: [x]}], actions: {x: {kind: webhook, "
            f"url: 'https://h', headers: 'Bearer {secret}'}}}}}}]\n",
            {},
            "headers: Input should be a valid dictionary",
        ),
    ]
    for text, environ, shown in bad:
        problems = errors(text, environ=environ)
        assert any(shown in p for p in problems), problems
        assert not any(secret in p for p in problems), problems


def test_the_launcher_spreads_a_pools_replicas_over_its_gpus_and_gpus_need_an_engine_on_a_gpu() -> None:
    from common.stack.launcher import commands, environments

    cfg = parse_config(
        "detector: {pools: [{name: main, model: {classes: [a]}, replicas: 3, gpus: [0, 1]},"
        " {name: cpu, model: {classes: [a]}, engine: {kind: torch, gpu: null}}]}"
    )
    variable = "STREAMYOLO__DETECTOR__POOLS__MAIN__ENGINE__GPU"
    assert environments(cfg) == {f"detector-main-{r}": {variable: gpu} for r, gpu in enumerate("010")}
    assert "detector-cpu-0" in commands(cfg, Path("s.yaml"))
    # What each replica's environment says is what that replica's config then holds.
    assert (
        parse_config("detector: {pools: [{name: main, model: {classes: [a]}, gpus: [0, 1]}]}", environ={variable: "1"})
        .pool("main")
        .engine.gpu
        == 1
    )
    with pytest.raises(ConfigError, match=r"gpus \[0\] but engine.gpu is null"):
        parse_config(
            "detector: {pools: [{name: p, model: {classes: [a]}, gpus: [0], engine: {kind: torch, gpu: null}}]}"
        )
