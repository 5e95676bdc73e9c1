"""proxy.healthcheck in-process, against small stdlib servers standing in for regcache's
/healthz: which port it asks, over which scheme, and what counts as an answer.
tests/deploy/test_dockerfile.py runs the image's HEALTHCHECK command against regcache itself.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from proxy import healthcheck
from tests.support.certs import CertificateAuthority


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest's output to the test's own


@contextmanager
def serving(status: int = 200, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cert, key = CertificateAuthority().server().write(tmp_path_factory.mktemp("tls"), "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize(
    ("environ", "port"),
    [({}, 5000), ({"REGCACHE_LISTEN": ""}, 5000), ({"REGCACHE_LISTEN": "0.0.0.0:8080"}, 8080)],
)
def test_port_follows_regcache_listen(environ: dict[str, str], port: int) -> None:
    assert healthcheck.port(environ) == port


def test_plain_http_answers_and_https_to_it_does_not() -> None:
    with serving() as port:
        assert healthcheck.ask("http", port) is None
        problem = healthcheck.ask("https", port)
    assert problem is not None
    assert problem.startswith(f"https://127.0.0.1:{port}/healthz: ")


def test_https_answers_with_any_certificate(server_tls: ssl.SSLContext) -> None:
    # The test CA is trusted by nobody: the check must not verify.
    with serving(tls=server_tls) as port:
        assert healthcheck.ask("https", port) is None
        assert healthcheck.ask("http", port) is not None


def test_an_unhealthy_answer_fails() -> None:
    with serving(status=503) as port:
        assert healthcheck.ask("http", port) == f"http://127.0.0.1:{port}/healthz: answered 503"


def test_main_tries_http_then_https(
    server_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(tls=server_tls) as port:
        monkeypatch.setenv("REGCACHE_LISTEN", f"0.0.0.0:{port}")
        assert healthcheck.main() == 0
    assert healthcheck.main() == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("://")[0] for line in lines] == ["http", "https"]


def test_no_third_party_import() -> None:
    # The check runs every 30 s in every container: the standard library only.
    source = Path(healthcheck.__file__).read_text()
    imports = [line.split()[1] for line in source.splitlines() if line.startswith("import ")]
    assert set(imports) <= {"http.client", "os", "ssl", "sys"}
