"""OAuth error responses (RFC 6749 §5.2): JSON `error` and `error_description`, never cached.

Routes catch `OAuthError` and return `response(exc)`; the app-wide problem+json handlers never see it, so OAuth
endpoints answer in the form OAuth client libraries parse.
"""

from __future__ import annotations

import json

from starlette.responses import Response

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
BASIC_CHALLENGE = 'Basic realm="sscard", charset="UTF-8"'


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_client(description: str, *, by_header: bool) -> OAuthError:
    """RFC 6749 §5.2: 401, and a Basic challenge when the client tried the Authorization header."""
    return OAuthError("invalid_client", description, 401, {"WWW-Authenticate": BASIC_CHALLENGE} if by_header else None)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def json_response(body: dict[str, object], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # Serialised here rather than by JSONResponse: the token endpoint is hot and this is all it needs.
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(content, status, {**NO_STORE, **(headers or {})}, media_type="application/json")


def response(exc: OAuthError) -> Response:
    # The description is ours (never echoes input), and RFC 6749 restricts it to printable ASCII.
    description = exc.description.encode("ascii", "replace").decode().replace('"', "'")
    return json_response({"error": exc.error, "error_description": description}, exc.status, exc.headers)
