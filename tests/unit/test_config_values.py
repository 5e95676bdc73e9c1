"""Configuration values: properties over any address, document or text, and the units of
the operations settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config import (
    TOP_LEVEL_KEYS,
    UPSTREAM_KEYS,
    ConfigError,
)
from tests.support.configfiles import load, load_error, write

# --- properties -----------------------------------------------------------------------------


@given(host=st.ip_addresses(), port=st.integers(1, 65535))
def test_any_ip_and_port_can_be_listened_on(host: Any, port: int) -> None:
    text = f"[{host}]:{port}" if host.version == 6 else f"{host}:{port}"
    config = load(listen=text)
    assert (config.listen_host, config.listen_port) == (str(host), port)


@given(port=st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
def test_ports_outside_the_range_are_rejected(port: int) -> None:
    assert "65535" in load_error(listen=f"127.0.0.1:{port}").reason


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_VALUES = (
    _SCALARS | st.lists(_SCALARS, max_size=2) | st.dictionaries(_SCALARS, _SCALARS, max_size=2)
)
# password_file is left out: a random path could name a device that blocks when read.
_UPSTREAM = st.dictionaries(
    st.sampled_from([key for key in UPSTREAM_KEYS if key != "password_file"]), _VALUES, max_size=5
)
_DOCUMENT = st.dictionaries(
    st.sampled_from(TOP_LEVEL_KEYS), _VALUES | st.lists(_UPSTREAM, max_size=3), max_size=5
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(document=_DOCUMENT)
def test_any_document_loads_or_fails_with_config_error(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    try:
        load(path, {"X": "x"})
    except ConfigError as error:
        message = str(error)
    else:
        message = ""
    assert "\n" not in message


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_text_loads_or_fails_with_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load(path)
    except ConfigError as error:
        message = str(error)
    else:
        message = ""
    assert "\n" not in message


# --- operations settings: offline, cache bounds, timeouts, event loop ----------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("50GiB", 50 * 2**30), ("500MB", 500 * 10**6), ("1073741824", 2**30), ("1.5 KiB", 1536)],
)
def test_cache_max_size_units(tmp_path: Path, text: str, size: int) -> None:
    config = load(write(tmp_path, f"cache:\n  max_size: {text}\n"))
    assert config.cache_max_size == size
    assert config.cache_max_age is None


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90", 90)])
def test_cache_max_age_units(tmp_path: Path, text: str, seconds: float) -> None:
    assert load(write(tmp_path, f"cache:\n  max_age: {text}\n")).cache_max_age == seconds


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("cache:\n  max_size: lots\n", "cache.max_size", 2),
        ("cache:\n  max_size: 0\n", "cache.max_size", 2),
        ("cache:\n  max_age: -1d\n", "cache.max_age", 2),
        ("cache:\n  max_sise: 1GiB\n", "cache.max_sise", 2),
        ("cache: 5\n", "cache", 1),
        ("offline: perhaps\n", "offline", 1),
        ("event_loop: trio\n", "event_loop", 1),
        (
            "upstreams:\n  - name: a.io\n    url: https://a.io\n    read_timeout: 0\n",
            "upstreams[0].read_timeout",
            4,
        ),
        (
            "upstreams:\n  - name: a.io\n    url: https://a.io\n    serve_stale_on_not_found: 1\n",
            "upstreams[0].serve_stale_on_not_found",
            4,
        ),
    ],
)
def test_operations_settings_errors_name_key_and_line(
    tmp_path: Path, text: str, key: str, line: int
) -> None:
    error = load_error(write(tmp_path, text))
    assert error.key == key
    assert error.line == line


def test_offline_from_file_env_and_flag(tmp_path: Path) -> None:
    assert load(write(tmp_path, "offline: true\n")).offline
    assert load(env={"REGCACHE_OFFLINE": "yes"}).offline
    assert load(offline=True).offline
    assert not load(write(tmp_path, "offline: false\n")).offline


def test_upstream_timeouts_and_stale_setting(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            """
            default_upstream: a.io
            upstreams:
              - name: a.io
                url: https://a.io
                connect_timeout: 2.5
                read_timeout: 30
                serve_stale_on_not_found: true
            """,
        )
    )
    upstream = config.upstreams[0]
    assert (upstream.connect_timeout, upstream.read_timeout) == (2.5, 30.0)
    assert upstream.serve_stale_on_not_found


def test_event_loop_choice(tmp_path: Path) -> None:
    assert load().event_loop == "asyncio"
    assert load(write(tmp_path, "event_loop: asyncio\n")).event_loop == "asyncio"
    assert load(env={"REGCACHE_EVENT_LOOP": "uvloop"}).event_loop == "uvloop"
