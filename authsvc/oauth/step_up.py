"""Step-up authentication for resource servers (RFC 9470).

A resource server that needs more than the token shows (a higher `acr`, or a more recent login) answers 401 with
`WWW-Authenticate: Bearer error="insufficient_user_authentication"` and the `acr_values` / `max_age` to ask for; the
client sends the citizen back to /authorize with them, and the provider asks only for the missing factors.

    token = resource.from_request(runtime, request)
    step_up.require(token, acr=HIGH, max_age=300)   # raises InsufficientUserAuthentication

The exception is an `authsvc.problems.Problem`: raised from a route it becomes the 401 with its challenge.
"""

from __future__ import annotations

import time

from authsvc.oauth.resource import AccessToken, TokenError
from authsvc.tokens.assurance import satisfies

ERROR = "insufficient_user_authentication"


class InsufficientUserAuthentication(TokenError):
    def __init__(self, description: str, *, scheme: str, acr: str | None, max_age: int | None) -> None:
        params: dict[str, str] = {}
        if acr is not None:
            params["acr_values"] = acr
        if max_age is not None:
            params["max_age"] = str(max_age)
        super().__init__(401, ERROR, description, scheme=scheme, **params)
        self.acr = acr
        self.max_age = max_age


def require(
    token: AccessToken, *, acr: str | None = None, max_age: int | None = None, now: float | None = None
) -> None:
    """Pass if the token's login reached `acr` (or above) and happened at most `max_age` seconds ago."""
    reached, auth_time = token.acr, token.auth_time
    if acr is not None and (reached is None or not satisfies(reached, acr)):
        raise InsufficientUserAuthentication(
            "a higher authentication level is required", scheme=token.scheme, acr=acr, max_age=max_age
        )
    if max_age is not None:
        now = time.time() if now is None else now
        if not isinstance(auth_time, int) or now - auth_time > max_age:
            raise InsufficientUserAuthentication(
                "a more recent authentication is required", scheme=token.scheme, acr=acr, max_age=max_age
            )
