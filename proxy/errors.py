"""Errors a client can see, as OCI distribution error codes.

Every failure that reaches a client is one of these; ``proxy.server.middleware`` renders
them as ``{"errors": [{"code", "message", "detail"}]}`` in one place.

    RegistryError
    ├── NameInvalid          400 NAME_INVALID
    ├── NameUnknown          404 NAME_UNKNOWN
    ├── DigestInvalid        400 DIGEST_INVALID
    ├── ManifestUnknown      404 MANIFEST_UNKNOWN
    ├── BlobUnknown          404 BLOB_UNKNOWN
    ├── RangeInvalid         416 RANGE_INVALID
    ├── Unsupported          405 UNSUPPORTED (push, unknown methods) / 404 (unknown paths)
    ├── Unauthorized         401 UNAUTHORIZED   (upstream refused our credentials, or the
    │                                          client's: then with a WWW-Authenticate challenge)
    ├── Denied               403 DENIED         (the upstream refused, or an access rule did)
    ├── TooManyRequests      429 TOOMANYREQUESTS (carries the upstream's Retry-After, or
    │                                          regcache's own after too many failed logins)
    └── UpstreamError        the upstream failed us rather than the client's request
        ├── UpstreamUnavailable   503 UNAVAILABLE (unreachable, timed out, 5xx)
        ├── UpstreamInvalid       502 UNKNOWN (bytes that fail their digest, bad manifests)
        └── UpstreamOffline       404, as MANIFEST_UNKNOWN / BLOB_UNKNOWN / NAME_UNKNOWN:
                                  offline mode and the content is not cached
"""

from __future__ import annotations

from typing import Any, ClassVar


class RegistryError(Exception):
    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "unknown error"

    def __init__(
        self,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        self.message = message or self.default_message
        # An upstream's own code (for statuses we pass through) wins over the class default.
        self.error_code = code or self.code
        self.detail = detail
        self.http_status = status or self.status
        self.headers = headers or {}
        super().__init__(self.message)

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.error_code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}


class NameInvalid(RegistryError):
    code, status, default_message = "NAME_INVALID", 400, "invalid repository name"


class NameUnknown(RegistryError):
    code, status, default_message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class DigestInvalid(RegistryError):
    code, status, default_message = "DIGEST_INVALID", 400, "provided digest did not match"


class ManifestUnknown(RegistryError):
    code, status, default_message = "MANIFEST_UNKNOWN", 404, "manifest unknown"


class BlobUnknown(RegistryError):
    code, status, default_message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class RangeInvalid(RegistryError):
    code, status, default_message = "RANGE_INVALID", 416, "requested range not satisfiable"


class Unsupported(RegistryError):
    code, status, default_message = "UNSUPPORTED", 405, "the operation is unsupported"


class Unauthorized(RegistryError):
    code, status, default_message = "UNAUTHORIZED", 401, "authentication required"


class Denied(RegistryError):
    code, status, default_message = "DENIED", 403, "requested access to the resource is denied"


class TooManyRequests(RegistryError):
    code, status, default_message = "TOOMANYREQUESTS", 429, "too many requests"


class UpstreamError(RegistryError):
    """The upstream, not the client, is at fault."""

    code, status, default_message = "UNAVAILABLE", 503, "upstream registry unavailable"


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamInvalid(UpstreamError):
    code, status, default_message = "UNKNOWN", 502, "upstream registry sent invalid content"


class UpstreamOffline(UpstreamError):
    """Raised where an upstream would have been asked; the handler names what is missing."""

    code, status, default_message = "NAME_UNKNOWN", 404, "regcache is offline"
