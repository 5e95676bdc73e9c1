"""The ``tls:`` section: both halves or neither, and files that do not load are config errors
that name the key, where it was set and what is wrong, in one line, before anything starts."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from proxy.config import CliOverrides, Config, ConfigError, load_config
from proxy.config.tls import server_context
from tests.support.certs import CertificateAuthority

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture
def pair(tmp_path: Path, ca: CertificateAuthority) -> tuple[Path, Path]:
    return ca.server().write(tmp_path, "server")


def tls_file(tmp_path: Path, **keys: object) -> Path:
    lines = [
        "listen: 127.0.0.1:5000",
        "tls:",
        *(f"  {key}: {value}" for key, value in keys.items()),
    ]
    path = tmp_path / "regcache.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def load(path: Path, env: dict[str, str] | None = None) -> Config:
    return load_config(path, env or {}, CliOverrides())


def error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, env)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_pair_and_a_client_ca_load(
    tmp_path: Path, pair: tuple[Path, Path], ca: CertificateAuthority
) -> None:
    ca_file = ca.write(tmp_path / "clients.crt")
    config = load(tls_file(tmp_path, cert_file=pair[0], key_file=pair[1], client_ca_file=ca_file))
    assert (config.tls_cert_file, config.tls_key_file) == pair
    assert config.tls_client_ca_file == ca_file


def test_without_tls_nothing_is_set() -> None:
    config = Config()
    assert (config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file) == (None,) * 3


def test_cert_without_key(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    path = tls_file(tmp_path, cert_file=pair[0])
    assert error(path) == (
        f"config error: {path} line 3: tls.cert_file: is set but tls.key_file is not; "
        "give both to serve HTTPS"
    )


def test_key_without_cert(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    assert "tls.key_file: is set but tls.cert_file is not" in error(
        tls_file(tmp_path, key_file=pair[1])
    )


def test_client_ca_alone(tmp_path: Path, ca: CertificateAuthority) -> None:
    ca_file = ca.write(tmp_path / "clients.crt")
    assert "tls.client_ca_file: is set but tls.cert_file is not" in error(
        tls_file(tmp_path, client_ca_file=ca_file)
    )


def test_missing_cert_file(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    path = tls_file(tmp_path, cert_file=tmp_path / "nope.crt", key_file=pair[1])
    assert error(path) == (
        f"config error: {path} line 3: tls.cert_file: cannot read "
        f"'{tmp_path / 'nope.crt'}': No such file or directory"
    )


def test_unreadable_key_file(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    # A directory: unreadable as a file even for root, who ignores permission bits.
    text = error(tls_file(tmp_path, cert_file=pair[0], key_file=tmp_path))
    assert f"line 4: tls.key_file: cannot read '{tmp_path}': Is a directory" in text


def test_not_a_certificate(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_text("hello\n")
    text = error(tls_file(tmp_path, cert_file=junk, key_file=pair[1]))
    assert text.endswith(f"tls.cert_file: '{junk}' holds no PEM certificate")


def test_mismatched_key(tmp_path: Path, pair: tuple[Path, Path], ca: CertificateAuthority) -> None:
    _, other_key = ca.server().write(tmp_path / "other", "server")
    text = error(tls_file(tmp_path, cert_file=pair[0], key_file=other_key))
    assert text.endswith("line 4: tls.key_file: does not match the certificate in tls.cert_file")


def test_encrypted_key_is_refused_not_prompted_for(
    tmp_path: Path, pair: tuple[Path, Path], ca: CertificateAuthority
) -> None:
    issued = ca.server()
    cert, key = issued.write(tmp_path / "enc", "server")
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    text = error(tls_file(tmp_path, cert_file=cert, key_file=key))
    assert text.endswith("tls.key_file: is encrypted; regcache needs a key without a passphrase")


def test_bad_client_ca(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    junk = tmp_path / "ca.crt"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    text = error(tls_file(tmp_path, cert_file=pair[0], key_file=pair[1], client_ca_file=junk))
    assert f"line 5: tls.client_ca_file: '{junk}' holds no usable CA certificate" in text


def test_environment_names_the_variable(
    tmp_path: Path, pair: tuple[Path, Path], ca: CertificateAuthority
) -> None:
    _, other_key = ca.server().write(tmp_path / "other", "server")
    env = {"REGCACHE_TLS_CERT_FILE": str(pair[0]), "REGCACHE_TLS_KEY_FILE": str(other_key)}
    with pytest.raises(ConfigError) as info:
        load_config(None, env, CliOverrides())
    assert str(info.value) == (
        "config error: environment variable REGCACHE_TLS_KEY_FILE: tls.key_file: "
        "does not match the certificate in tls.cert_file"
    )


def test_unknown_key_in_the_section(tmp_path: Path) -> None:
    assert "tls.cert: unknown key (did you mean 'cert_file'?)" in error(
        tls_file(tmp_path, cert="x")
    )


def test_serve_exits_2_with_one_line(
    tmp_path: Path, pair: tuple[Path, Path], ca: CertificateAuthority
) -> None:
    _, other_key = ca.server().write(tmp_path / "other", "server")
    path = tls_file(tmp_path, cert_file=pair[0], key_file=other_key)
    env = {key: value for key, value in os.environ.items() if not key.startswith("REGCACHE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"regcache: config error: {path} line 4: tls.key_file: "
        "does not match the certificate in tls.cert_file\n"
    )


def test_a_client_ca_is_the_only_trusted_one(
    tmp_path: Path, pair: tuple[Path, Path], ca: CertificateAuthority
) -> None:
    # Not the system's CAs as well: a certificate from any public CA would get in then.
    clients = CertificateAuthority("clients")
    context = server_context(*pair, clients.write(tmp_path / "clients.crt"))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "clients"),),)]
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server_context(*pair, None).verify_mode == ssl.CERT_NONE
