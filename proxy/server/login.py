"""Client logins in HTTP terms: the gate's view of a request, and regcache's /token endpoint.

The realm in challenges is regcache's own /token URL, built from the request's Host. Of
X-Forwarded-Proto only ``https`` is honoured: it can turn the realm to https (regcache behind
a TLS-terminating proxy), never down to http, so a forged header can at worst send the
client's own credentials to the same host over TLS.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from aiohttp import web

from proxy.auth.gate import Caller, Gate
from proxy.auth.rules import Principal
from proxy.errors import NameInvalid, RegistryError, Unsupported
from proxy.model import Credentials
from proxy.oci.names import is_valid_name
from proxy.routing import Router

# Host names, IPv4 and bracketed IPv6 with an optional port: nothing that could close the
# quoted realm or start a new header.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
MAX_QUERY_LENGTH = 8192
# A password grant is a few hundred bytes; more is not a login.
MAX_FORM_BYTES = 8192
MAX_FORM_FIELDS = 64
FORM_TYPE = "application/x-www-form-urlencoded"


class TokenRequestInvalid(RegistryError):
    """A POST /token that is not an OAuth2 password grant regcache can answer; the detail
    carries OAuth2's error code (``unsupported_grant_type``, ``invalid_request``)."""

    code, status, default_message = "UNSUPPORTED", 400, "invalid token request"

    def __init__(
        self, oauth_error: str, message: str, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message, detail={"error": oauth_error}, status=status, code=code)


def realm(request: web.Request) -> str:
    host = request.headers.get("Host", "")
    if not _HOST.fullmatch(host):
        # No usable Host (HTTP/1.0, or a hostile one): the address the client connected to.
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            address, port = str(sockname[0]), sockname[1]
            host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        else:
            host = "localhost"
    scheme = request.scheme
    if request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https":
        scheme = "https"
    return f"{scheme}://{host}/token"


def caller(request: web.Request, asked: str) -> Caller:
    return Caller(
        address=request.remote or "-",
        authorization=request.headers.get("Authorization"),
        realm=realm(request),
        asked=asked,
    )


def may_pull(gate: Gate, router: Router, principal: Principal, name: str) -> bool:
    """Whether a token may name ``name``: the request that uses it may add ``?ns=``, so any
    upstream the name could be routed to counts; each request is checked again after
    routing, with the rules as they apply to its canonical name."""
    if not is_valid_name(name):
        return False
    for ns in (None, *router.upstream_names()):
        try:
            target = router.route(name, ns)
        except NameInvalid:
            continue
        upstream = target.upstream
        if gate.allows(principal, upstream.name, target.repository, upstream.passthrough):
            return True
    return False


async def token_endpoint(request: web.Request, gate: Gate | None, router: Router) -> web.Response:
    """GET /token (Basic credentials, Distribution's token flow) and POST /token (OAuth2's
    password grant, which containerd tries first): one issue path in the gate for both."""
    if gate is None:
        raise Unsupported("regcache issues no tokens: logins are off", status=404)
    form: Credentials | None = None
    if request.method == "POST":
        fields = await _form(request)
        form = _password_grant(fields)
    else:
        if len(request.rel_url.raw_query_string) > MAX_QUERY_LENGTH:
            raise NameInvalid("the token request is too long")
        fields = {k: request.query.getall(k, []) for k in ("scope", "service", "account")}
    scopes = [part for value in fields.get("scope", ()) for part in value.split()]
    account = _first(fields, "account")
    service = (_first(fields, "service") or "-")[:64]
    asked = f"token {request.method} service={service!r} scopes={scopes[:8]!r}"
    issued = await gate.issue(
        caller(request, asked[:512]),
        scopes,
        account,
        lambda principal, name: may_pull(gate, router, principal, name),
        form,
    )
    return web.json_response(issued.document(), headers={"Cache-Control": "no-store"})


async def _form(request: web.Request) -> dict[str, list[str]]:
    """The urlencoded body of a POST /token, read no further than MAX_FORM_BYTES."""
    if request.content_type != FORM_TYPE:
        raise TokenRequestInvalid("invalid_request", f"the token request must be {FORM_TYPE}", 415)
    # As aiohttp's own 413 reads in OCI terms (proxy.server.middleware).
    too_large = TokenRequestInvalid(
        "invalid_request", "the token request is too large", 413, "SIZE_INVALID"
    )
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise too_large
    body = b""
    # Chunked bodies have no Content-Length: count what arrives.
    while chunk := await request.content.read(MAX_FORM_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise too_large
    try:
        return parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:
        # Not UTF-8, a %-escape that is not, or too many fields.
        raise TokenRequestInvalid("invalid_request", "the token request is malformed") from None


def _password_grant(fields: dict[str, list[str]]) -> Credentials:
    """The credentials of a password grant. A missing field makes the user name empty, which
    the gate counts as malformed credentials (a failed login), as it does broken Basic ones."""
    grant = _first(fields, "grant_type")
    if grant != "password":
        # refresh_token among them: regcache never hands out refresh tokens.
        raise TokenRequestInvalid(
            "unsupported_grant_type",
            f"grant_type {(grant or '')[:32]!r} is not supported; use password",
        )
    user, password = _first(fields, "username"), _first(fields, "password")
    if user is None or password is None:
        return Credentials("", "")
    return Credentials(user, password)


def _first(fields: dict[str, list[str]], key: str) -> str | None:
    values = fields.get(key)
    return values[0] if values else None
