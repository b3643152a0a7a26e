"""Discovery document (OpenID Connect Discovery 1.0, RFC 8414) and JWKS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from authsvc.clients.models import AuthMethod, GrantType
from authsvc.deps import RuntimeDep
from authsvc.oauth.scopes import SCOPES
from authsvc.tokens.assurance import LEVELS
from keys.signing import ALGORITHM

router = APIRouter(tags=["oidc"])

# Relying parties may cache the key set this long; key rotation publishes a next key well before using it.
JWKS_MAX_AGE = 300


# Endpoint paths, relative to the issuer: the one place every module and the discovery document take them from.
AUTHORIZE = "/authorize"
PAR = "/par"
TOKEN = "/token"  # noqa: S105 - a path
USERINFO = "/userinfo"
INTROSPECT = "/introspect"
REVOKE = "/revoke"
LOGOUT = "/logout"
JWKS = "/jwks.json"
CLIENT_ASSERTION_ALGORITHMS = ["ES256", "PS256", "EdDSA"]  # FAPI 2.0 §5.4; no RS256, no HMAC
DPOP_ALGORITHMS = ["ES256", "PS256", "EdDSA"]


def metadata(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZE,
        "pushed_authorization_request_endpoint": issuer + PAR,
        "token_endpoint": issuer + TOKEN,
        "userinfo_endpoint": issuer + USERINFO,
        "introspection_endpoint": issuer + INTROSPECT,
        "revocation_endpoint": issuer + REVOKE,
        "end_session_endpoint": issuer + LOGOUT,
        "jwks_uri": issuer + JWKS,
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [g.value for g in GrantType],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "acr_values_supported": list(LEVELS),
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "amr",
            "at_hash",
            "sid",
            "name",
            "gender",
            "birthdate",
            "social_security_number",
        ],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_pushed_authorization_requests": False,  # per client: FAPI clients must push
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [m.value for m in AuthMethod],
        "token_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGORITHMS,
        "introspection_endpoint_auth_methods_supported": [m.value for m in AuthMethod if m != AuthMethod.NONE],
        "introspection_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGORITHMS,
        "revocation_endpoint_auth_methods_supported": [m.value for m in AuthMethod],
        "revocation_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGORITHMS,
        "dpop_signing_alg_values_supported": DPOP_ALGORITHMS,
        "authorization_response_iss_parameter_supported": True,
        "prompt_values_supported": ["none", "login"],
        "ui_locales_supported": ["zh-CN", "en"],
        "claim_types_supported": ["normal"],
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }


@router.get("/.well-known/openid-configuration")
def openid_configuration(runtime: RuntimeDep) -> JSONResponse:
    s = runtime.settings
    return JSONResponse(metadata(s.issuer), headers={"Cache-Control": "public, max-age=3600"})


@router.get(JWKS)
def jwks(runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse(
        runtime.keyring.jwks(),
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"},
    )
