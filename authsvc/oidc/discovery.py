"""Discovery document and JWKS. The full provider (authorization, token endpoints) arrives with SSO."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from authsvc.deps import RuntimeDep
from authsvc.tokens.assurance import LEVELS
from keys.signing import ALGORITHM

router = APIRouter(tags=["oidc"])

# Relying parties may cache the key set this long; key rotation publishes a next key well before using it.
JWKS_MAX_AGE = 300


def metadata(issuer: str, jwks_uri: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "acr_values_supported": list(LEVELS),
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "acr", "amr"],
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "scopes_supported": ["openid"],
    }


@router.get("/.well-known/openid-configuration")
def openid_configuration(runtime: RuntimeDep) -> JSONResponse:
    s = runtime.settings
    return JSONResponse(metadata(s.issuer, s.jwks_uri), headers={"Cache-Control": "public, max-age=3600"})


@router.get("/jwks.json")
def jwks(runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse(
        runtime.keyring.jwks(),
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"},
    )
