"""How the app is served: access records, JSON logs, the event loop choice, run_server's wiring
and ``python -m proxy``."""

from __future__ import annotations

import asyncio
import json
import logging
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import proxy
from proxy.config import Config, Listen
from proxy.logs import TEXT_FORMAT, JsonFormatter, TextFormatter
from proxy.server.accesslog import AccessLogger
from proxy.server.app import new_event_loop, run_server
from tests.fast.conftest import blob_path, stall_once
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache, make_config

TAG = "/v2/library/app/manifests/1.0"


def access_fields(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__["fields"] for r in caplog.records if r.name == "regcache.access"]


async def test_one_access_record_per_request_with_what_the_cache_did(
    regcache: InProcessRegcache, image: FakeImage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="regcache.access")
    layer = blob_path(image.layer_digests[1])
    for path in (TAG, TAG, layer, layer, "/healthz"):
        assert (await regcache.get(path, {"User-Agent": "tester/1"})).status == 200
    assert (await regcache.head(layer)).status == 200
    records = access_fields(caplog)
    assert [(r.get("kind"), r.get("cache")) for r in records] == [
        ("manifest", "miss"),
        ("manifest", "hit"),
        ("blob", "miss"),
        ("blob", "hit"),
        (None, None),
        ("blob", "hit"),
    ]
    size = len(image.layers[1])
    assert [r["bytes"] for r in records[2:]] == [size, size, 3, 0]
    blob = records[2]
    assert blob["upstream"] == "docker.io"
    assert blob["repository"] == "library/app"
    assert blob["reference"] == image.layer_digests[1]
    assert blob["status"] == 200
    assert blob["user_agent"] == "tester/1"
    assert blob["client"] == "127.0.0.1"
    assert blob["duration_ms"] >= 0
    text = [r.getMessage() for r in caplog.records if r.name == "regcache.access"]
    assert text[0].startswith(f'127.0.0.1 "GET {TAG}" 200 ')
    assert text[0].endswith(" manifest:miss")


async def test_json_log_lines_carry_the_access_fields(
    regcache: InProcessRegcache, image: FakeImage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="regcache.access")
    assert (await regcache.get(TAG, {"Accept": OCI_MANIFEST})).status == 200
    [record] = [r for r in caplog.records if r.name == "regcache.access"]
    line = json.loads(JsonFormatter().format(record))
    assert line["logger"] == "regcache.access"
    assert line["level"] == "info"
    assert line["time"].endswith("Z")
    assert line["kind"] == "manifest"
    assert line["cache"] == "miss"
    assert line["bytes"] == len(image.manifest)


def test_text_log_lines_read_as_loggings_default_format() -> None:
    """The text formatter formats the time's seconds once a second; lines are unchanged."""
    ours, default = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    for created in (1_700_000_000.0, 1_700_000_000.5, 1_700_000_001.25, 1_700_000_000.999):
        record = logging.LogRecord("regcache.access", logging.INFO, "", 0, "line", None, None)
        record.created, record.msecs = created, int(created * 1000) % 1000
        assert ours.format(record) == default.format(record)


def test_json_log_lines_carry_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("regcache").makeRecord(
            "regcache", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed x"
    assert "ValueError: boom" in line["exception"]


async def _pull_a_followed_blob(cache_dir: Path) -> None:
    async with FakeRegistry() as registry:
        image = registry.push_image("library/app", "1.0", layer_sizes=(300 * 1024,))
        registry.faults.append(stall_once(image.layer_digests[0], seconds=0.2))
        regcache = InProcessRegcache(make_config(cache_dir, registry.url))
        await regcache.start()
        try:
            path = blob_path(image.layer_digests[0])
            answers = await asyncio.gather(*(regcache.get(path) for _ in range(3)))
            answers.append(await regcache.get(path, {"Range": "bytes=10-"}))
        finally:
            await regcache.stop()
    assert [a.body for a in answers] == [image.layers[0]] * 3 + [image.layers[0][10:]]


def test_followers_get_the_right_bytes_on_uvloop(tmp_path: Path) -> None:
    # uvloop has no sendfile: spans of the growing file go through the copying fallback.
    with asyncio.Runner(loop_factory=lambda: new_event_loop("uvloop")) as runner:
        assert type(runner.get_loop()).__module__.startswith("uvloop")
        runner.run(_pull_a_followed_blob(tmp_path / "cache"))


@pytest.mark.parametrize(("choice", "module"), [("asyncio", "asyncio"), ("auto", "uvloop")])
def test_event_loop_choice(choice: str, module: str) -> None:
    loop = new_event_loop(choice)
    try:
        assert type(loop).__module__.split(".")[0] == module
    finally:
        loop.close()


def test_event_loop_without_uvloop_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an absent module imports as
    loop = new_event_loop("auto")
    assert type(loop).__module__.startswith("asyncio")
    loop.close()
    with pytest.raises(SystemExit, match="uvloop is not installed"):
        new_event_loop("uvloop")


def test_run_server_serves_the_app_on_the_configured_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(web, "run_app", lambda **kwargs: calls.append(kwargs))
    config = Config(listen=Listen("127.0.0.2", 5999), cache_dir=tmp_path)
    run_server(config)
    [call] = calls
    call["loop"].close()
    assert (call["host"], call["port"]) == ("127.0.0.2", 5999)
    assert call["access_log_class"] is AccessLogger
    assert call["shutdown_timeout"] == 30
    assert isinstance(call["app"], web.Application)
    call["print"]("======== Running ========")  # aiohttp's banner goes to the log


def test_python_dash_m_proxy_runs_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["regcache", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("proxy", run_name="__main__")
    assert exit_info.value.code == 0
    assert proxy.__version__ in capsys.readouterr().out
