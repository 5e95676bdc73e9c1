"""The storage section: the blob backend and the S3 bucket's settings and keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proxy.config import Config, ConfigError, render
from tests.support import configfiles
from tests.support.configfiles import write


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return configfiles.load(write(tmp_path, text), env)


def load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    return configfiles.load_error(write(tmp_path, text), env)


def test_local_by_default() -> None:
    config = Config()
    assert config.storage_backend == "local"
    assert config.storage_s3_bucket is None
    assert config.storage_s3_access_key_id is None


def test_s3_with_keys_from_files(tmp_path: Path) -> None:
    (tmp_path / "id").write_text("AKIDEXAMPLE\n")
    (tmp_path / "secret").write_text("wJalrXUtnFEMI\n")
    config = load(
        tmp_path,
        f"""
        storage:
          backend: s3
          s3:
            endpoint: http://127.0.0.1:9000/
            bucket: regcache
            region: eu-west-1
            prefix: /cache
            access_key_id_file: {tmp_path / "id"}
            secret_access_key_file: {tmp_path / "secret"}
        """,
    )
    assert config.storage_backend == "s3"
    assert config.storage_s3_endpoint == "http://127.0.0.1:9000"
    assert (config.storage_s3_bucket, config.storage_s3_region) == ("regcache", "eu-west-1")
    assert config.storage_s3_prefix == "cache/"
    assert config.storage_s3_access_key_id == "AKIDEXAMPLE"
    assert config.storage_s3_secret_access_key == "wJalrXUtnFEMI"
    # Neither the keys nor anything that holds them shows.
    assert "AKIDEXAMPLE" not in repr(config)
    shown = render(config)
    assert "AKIDEXAMPLE" not in shown
    assert "wJalrXUtnFEMI" not in shown
    assert yaml.safe_load(shown)["storage"]["s3"]["bucket"] == "regcache"


def test_s3_with_keys_from_the_environment(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        storage:
          backend: s3
          s3:
            bucket: regcache
            access_key_id_env: S3_ID
            secret_access_key_env: S3_SECRET
        """,
        {"S3_ID": "id", "S3_SECRET": "secret"},
    )
    assert config.storage_s3_endpoint is None  # AWS itself
    assert (config.storage_s3_access_key_id, config.storage_s3_secret_access_key) == (
        "id",
        "secret",
    )


def test_without_keys_the_aws_chain_is_left_to_find_them(tmp_path: Path) -> None:
    config = load(tmp_path, "storage: {backend: s3, s3: {bucket: regcache}}")
    assert config.storage_s3_access_key_id is None
    assert config.storage_s3_secret_access_key is None


@pytest.mark.parametrize(
    ("text", "env", "key", "reason"),
    [
        ("storage: {backend: s3}", {}, "storage.backend", "storage.s3.bucket is not set"),
        ("storage: {backend: gcs}", {}, "storage.backend", "is not one of local, s3"),
        (
            "storage: {s3: {bucket: b, access_key_id_env: ID}}",
            {"ID": "x"},
            "storage.s3.access_key_id_env",
            "storage.s3.secret_access_key_file or _env is not",
        ),
        (
            "storage: {s3: {bucket: b, access_key_id_env: ID, secret_access_key_env: S}}",
            {"ID": "x"},
            "storage.s3.secret_access_key_env",
            "'S' is not set",
        ),
        (
            "storage: {s3: {access_key_id_env: A, access_key_id_file: TMP/id}}",
            {"A": "x"},
            "storage.s3.access_key_id_env",
            "conflicts with storage.s3.access_key_id_file",
        ),
        (
            "storage: {s3: {bucket: b, redirect: true}}",
            {},
            "storage.s3.redirect",
            "need storage.backend: s3",
        ),
        ("storage: {s3: {buckett: b}}", {}, "storage.s3.buckett", "did you mean 'bucket'"),
        ("storage: {s3: {prefix: /}}", {}, "storage.s3.prefix", "must name a folder"),
        ("storage: {s3: {endpoint: ftp://x}}", {}, "storage.s3.endpoint", "http"),
    ],
)
def test_mistakes_are_named(
    tmp_path: Path, text: str, env: dict[str, str], key: str, reason: str
) -> None:
    (tmp_path / "id").write_text("AKIDEXAMPLE")
    error = load_error(tmp_path, text.replace("TMP", str(tmp_path)), env)
    assert error.key == key
    assert reason in str(error)
