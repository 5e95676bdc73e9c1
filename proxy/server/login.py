"""Client logins in HTTP terms: the gate's view of a request, and regcache's /token endpoint.

The realm in challenges is regcache's own /token URL, built from the request's Host. Of
X-Forwarded-Proto only ``https`` is honoured: it can turn the realm to https (regcache behind
a TLS-terminating proxy), never down to http, so a forged header can at worst send the
client's own credentials to the same host over TLS.
"""

from __future__ import annotations

import re

from aiohttp import web

from proxy.auth.gate import Caller, Gate
from proxy.auth.rules import Principal
from proxy.errors import NameInvalid, Unsupported
from proxy.oci.names import is_valid_name
from proxy.routing import Router

# Host names, IPv4 and bracketed IPv6 with an optional port: nothing that could close the
# quoted realm or start a new header.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
MAX_QUERY_LENGTH = 8192


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
    if gate is None:
        raise Unsupported("regcache issues no tokens: logins are off", status=404)
    if len(request.rel_url.raw_query_string) > MAX_QUERY_LENGTH:
        raise NameInvalid("the token request is too long")
    query = request.query
    scopes = [part for value in query.getall("scope", ()) for part in value.split()]
    account = query.get("account")
    asked = f"token service={query.get('service', '-')[:64]!r} scopes={scopes[:8]!r}"
    issued = await gate.issue(
        caller(request, asked[:512]),
        scopes,
        account,
        lambda principal, name: may_pull(gate, router, principal, name),
    )
    return web.json_response(issued.document(), headers={"Cache-Control": "no-store"})
