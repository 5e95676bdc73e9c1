"""A minimal blocking HTTP client for probing the loopback servers in tests."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        # Tests want to see a redirect itself (e.g. a blob's 307), not where it leads.
        return None


# No ProxyHandler from the environment: an http_proxy variable must not capture 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def http_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpResponse:
    """Send one request; error statuses are returned, not raised. ``ssl_context`` is what an
    https:// request trusts (and the client certificate it shows).

    Connection failures raise the underlying OSError (e.g. ConnectionRefusedError).
    """
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    opener = _opener
    if ssl_context is not None:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            _NoRedirect(),
            urllib.request.HTTPSHandler(context=ssl_context),
        )
    try:
        with opener.open(req, timeout=timeout) as resp:
            return HttpResponse(int(resp.status), resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpResponse(exc.code, exc.headers, exc.read())
    except urllib.error.URLError as exc:
        # Unwrapped, so tests can expect ConnectionRefusedError during an outage.
        if isinstance(exc.reason, OSError):
            raise exc.reason from exc
        raise


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> HttpResponse:
    return http_request("GET", url, headers, timeout=timeout)
