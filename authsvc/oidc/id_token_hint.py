"""`id_token_hint` (OpenID Connect Core §3.1.2.1, RP-Initiated Logout §2): an ID token this provider issued,
presented back by a portal to say whom it expects. Its signature and issuer are checked; its expiry is not, since a
portal naturally holds an expired one."""

from __future__ import annotations

from typing import Any

import jwt

from authsvc.runtime import Runtime
from keys.signing import ALGORITHM


def read(runtime: Runtime, hint: str) -> dict[str, Any] | None:
    """The hint's claims, or None when it is not an ID token this provider issued."""
    try:
        header = jwt.get_unverified_header(hint)
        key = runtime.keyring.public_key(str(header.get("kid")))
        if key is None or header.get("typ", "JWT") != "JWT":  # an access token (at+jwt) is no ID token hint
            return None
        return jwt.decode(
            hint,
            key,
            algorithms=[ALGORITHM],
            issuer=runtime.settings.issuer,
            options={"verify_exp": False, "verify_aud": False, "require": ["iss", "sub", "aud"]},
        )
    except jwt.PyJWTError:
        return None


def audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []
