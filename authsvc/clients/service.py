"""Registering and managing clients (CLI and admin API alike). Validation here is the only gate: a client's
registration is what every later request is checked against."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.clients.models import AuthMethod, ClientStatus, GrantType, OAuthClient, SubjectType
from authsvc.oauth import scopes as known_scopes
from authsvc.oidc.discovery import CLIENT_ASSERTION_ALGORITHMS
from authsvc.tokens.assurance import LEVELS
from keys.hmac_keys import CLIENT_SECRET, HmacKeys

MIN_RSA_BITS = 2048  # FAPI 2.0 §5.4.1 (DPoP proofs are held to the same)
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})  # RFC 7518 §6; "k" a symmetric key
_LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
# RFC 8252 §7.3 / §8.3: a native app's loopback redirect names an IP literal (not "localhost") and no port; the
# app listens on whatever port it gets, and the request's URI may carry any port.
_LOOPBACK_IP = {"127.0.0.1", "::1"}


class ClientError(Exception):
    """Bad client metadata; `reason` is the RFC 7591 error code."""

    def __init__(self, detail: str, reason: str = "invalid_client_metadata") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class ClientSpec:
    name: str
    auth_method: str = AuthMethod.PRIVATE_KEY_JWT
    redirect_uris: list[str] = field(default_factory=list)
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    grant_types: list[str] = field(default_factory=lambda: [GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN])
    scopes: list[str] = field(default_factory=lambda: [known_scopes.OPENID, known_scopes.PROFILE])
    acr_values: list[str] = field(default_factory=lambda: [LEVELS[1]])
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    ssn_min_acr: str | None = None
    fapi: bool = False
    require_dpop: bool = False
    subject_type: str = SubjectType.PUBLIC
    sector_identifier: str | None = None
    backchannel_logout_uri: str | None = None
    may_introspect: bool = False


def _check_uri(uri: str, what: str, *, allow_query: bool = True) -> str:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - urllib checks the port only when it is read
    except ValueError:  # an unclosed IPv6 literal, a port that is not a number or out of range
        raise ClientError(f"{what} {uri!r} is not a well-formed URL") from None
    if parts.scheme == "https" and parts.hostname:
        pass
    elif parts.scheme == "http" and parts.hostname in _LOOPBACK:
        pass  # loopback only: development portals and tests; never a remote host in clear text
    else:
        raise ClientError(f"{what} {uri!r} must be an https URL (http only on the loopback interface)")
    if parts.fragment or "#" in uri:
        raise ClientError(f"{what} {uri!r} must not have a fragment")
    if "*" in uri:
        raise ClientError(f"{what} {uri!r}: wildcards are not allowed, redirect URIs match exactly")
    if parts.query and not allow_query:
        raise ClientError(f"{what} {uri!r} must not have a query")
    return uri


def _check_jwks(jwks: dict[str, Any]) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt import PyJWK
    from jwt.exceptions import PyJWTError

    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ClientError("jwks must be a JWK Set with at least one key")
    for key in keys:
        if not isinstance(key, dict):
            raise ClientError("jwks: every key must be a JSON object")
        if PRIVATE_JWK_MEMBERS & set(key):
            raise ClientError("jwks must hold public keys only")
        alg = key.get("alg")
        if alg is not None and alg not in CLIENT_ASSERTION_ALGORITHMS:
            accepted = ", ".join(CLIENT_ASSERTION_ALGORITHMS)
            raise ClientError(f"jwks: algorithm {alg} is not accepted; use one of {accepted}")
        try:
            parsed = PyJWK(key)
        except (PyJWTError, ValueError, TypeError) as exc:  # InvalidKeyError is not a PyJWKError
            raise ClientError(f"jwks: unusable key: {exc}") from None
        if isinstance(parsed.key, rsa.RSAPublicKey) and parsed.key.key_size < MIN_RSA_BITS:
            raise ClientError(f"jwks: RSA keys must have at least {MIN_RSA_BITS} bits")
    return {"keys": keys}


def validate(spec: ClientSpec) -> ClientSpec:
    if not spec.name.strip() or len(spec.name) > 128:
        raise ClientError("name must be 1-128 characters")
    if spec.auth_method not in set(AuthMethod):
        raise ClientError(f"auth method must be one of {', '.join(AuthMethod)}")
    grants = list(dict.fromkeys(spec.grant_types))
    if not grants or not set(grants) <= set(GrantType):
        raise ClientError(f"grant types must be among {', '.join(GrantType)}")
    if GrantType.REFRESH_TOKEN in grants and GrantType.AUTHORIZATION_CODE not in grants:
        raise ClientError("refresh_token is only issued together with authorization_code")
    redirect_uris = [_check_uri(u, "redirect URI") for u in dict.fromkeys(spec.redirect_uris)]
    if GrantType.AUTHORIZATION_CODE in grants and not redirect_uris:
        raise ClientError("an authorization_code client needs at least one redirect URI")
    post_logout = [_check_uri(u, "post-logout redirect URI") for u in dict.fromkeys(spec.post_logout_redirect_uris)]
    scopes = list(dict.fromkeys(spec.scopes))
    unknown = set(scopes) - set(known_scopes.SCOPES)
    if unknown:
        raise ClientError(f"unknown scopes: {', '.join(sorted(unknown))}", "invalid_scope")
    acr_values = list(dict.fromkeys(spec.acr_values))
    if not acr_values or not set(acr_values) <= set(LEVELS):
        raise ClientError(f"assurance levels must be among {', '.join(LEVELS)}")
    if spec.ssn_min_acr is not None:
        if spec.ssn_min_acr not in LEVELS:
            raise ClientError(f"the SSN release level must be one of {', '.join(LEVELS)}")
        if known_scopes.SSN not in scopes:
            raise ClientError("an SSN release level needs the ssn scope")
    elif known_scopes.SSN in scopes:
        raise ClientError("the ssn scope needs a minimum assurance level for release (ssn_min_acr)")
    jwks = None
    if spec.auth_method == AuthMethod.PRIVATE_KEY_JWT:
        if (spec.jwks is None) == (spec.jwks_uri is None):
            raise ClientError("private_key_jwt needs exactly one of jwks and jwks_uri")
        jwks = _check_jwks(spec.jwks) if spec.jwks is not None else None
        if spec.jwks_uri is not None:
            _check_uri(spec.jwks_uri, "jwks_uri")
    elif spec.jwks is not None or spec.jwks_uri is not None:
        raise ClientError("keys are only registered for private_key_jwt")
    if spec.fapi and spec.auth_method != AuthMethod.PRIVATE_KEY_JWT:
        raise ClientError("a FAPI 2.0 client authenticates with private_key_jwt")
    if spec.auth_method == AuthMethod.NONE:
        _check_native(grants, redirect_uris, spec)
    if spec.subject_type not in set(SubjectType):
        raise ClientError("subject type must be public or pairwise")
    sector = spec.sector_identifier
    if spec.subject_type == SubjectType.PAIRWISE and sector is None:
        hosts = {urlsplit(u).hostname for u in redirect_uris}
        if len(hosts) != 1:
            raise ClientError("a pairwise client with redirect URIs on several hosts needs a sector identifier")
        sector = hosts.pop()
    if spec.backchannel_logout_uri is not None:
        _check_uri(spec.backchannel_logout_uri, "back-channel logout URI")
    return ClientSpec(
        name=spec.name.strip(),
        auth_method=spec.auth_method,
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=post_logout,
        grant_types=grants,
        scopes=scopes,
        acr_values=acr_values,
        jwks=jwks,
        jwks_uri=spec.jwks_uri,
        ssn_min_acr=spec.ssn_min_acr,
        fapi=spec.fapi,
        require_dpop=spec.require_dpop or spec.fapi,
        subject_type=spec.subject_type,
        sector_identifier=sector,
        backchannel_logout_uri=spec.backchannel_logout_uri,
        may_introspect=spec.may_introspect,
    )


def _check_native(grants: list[str], redirect_uris: list[str], spec: ClientSpec) -> None:
    """A public client (RFC 8252 native app) gets only what PKCE alone can protect."""
    if not set(grants) <= {GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN}:
        raise ClientError("a public client (auth method none) uses the authorization code grant only")
    if spec.may_introspect:
        raise ClientError("a public client cannot call introspection")
    for uri in redirect_uris:
        parts = urlsplit(uri)
        if parts.scheme == "http" and (parts.hostname not in _LOOPBACK_IP or parts.port is not None):
            raise ClientError(
                f"redirect URI {uri!r}: a native app's loopback redirect is http://127.0.0.1/PATH or "
                "http://[::1]/PATH, without a port (RFC 8252 §7.3)"
            )


def redirect_uri_registered(client: OAuthClient, uri: str) -> bool:
    """Whether `uri` is one of the client's redirect URIs: character for character, except that a public native
    client's loopback URI matches with any port (RFC 8252 §7.3: the app listens on an ephemeral port)."""
    if uri in client.redirect_uris:
        return True
    if client.auth_method != AuthMethod.NONE:
        return False
    if not (uri.isascii() and uri.isprintable()):
        return False  # urlsplit drops tabs and line breaks; the browser would be sent to the URI as given
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "http" or parts.hostname not in _LOOPBACK_IP or port is None or parts.username is not None:
        return False
    host = "[::1]" if parts.hostname == "::1" else parts.hostname
    return parts._replace(netloc=host).geturl() in client.redirect_uris


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def new_client_id() -> str:
    """144 random bits, base64url, never led by "-": `authsvc client show -x…` would read it as an option."""
    while (client_id := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return client_id


def register(session: Session, hmac_keys: HmacKeys, spec: ClientSpec, *, actor: str) -> tuple[OAuthClient, str | None]:
    """The new client and, for client_secret_basic, its secret: returned once, stored only as a keyed digest."""
    spec = validate(spec)
    secret = new_secret() if spec.auth_method == AuthMethod.CLIENT_SECRET_BASIC else None
    client = OAuthClient(
        client_id=new_client_id(),
        name=spec.name,
        status=ClientStatus.ACTIVE,
        auth_method=spec.auth_method,
        secret_digest=hmac_keys.digest(CLIENT_SECRET, secret) if secret else None,
        jwks=spec.jwks,
        jwks_uri=spec.jwks_uri,
        redirect_uris=spec.redirect_uris,
        post_logout_redirect_uris=spec.post_logout_redirect_uris,
        grant_types=spec.grant_types,
        scopes=spec.scopes,
        acr_values=spec.acr_values,
        ssn_min_acr=spec.ssn_min_acr,
        fapi=spec.fapi,
        require_dpop=spec.require_dpop,
        subject_type=spec.subject_type,
        sector_identifier=spec.sector_identifier,
        backchannel_logout_uri=spec.backchannel_logout_uri,
        may_introspect=spec.may_introspect,
    )
    session.add(client)
    session.flush()
    audit.record(
        session, event="client_registered", outcome="success", detail={"client_id": client.client_id, "actor": actor}
    )
    return client, secret


def get(session: Session, client_id: str) -> OAuthClient | None:
    if not 1 <= len(client_id) <= 64:
        return None
    return session.scalars(select(OAuthClient).where(OAuthClient.client_id == client_id)).one_or_none()


def list_all(session: Session) -> Sequence[OAuthClient]:
    return session.scalars(select(OAuthClient).order_by(OAuthClient.id)).all()


def _existing(session: Session, client_id: str) -> OAuthClient:
    client = get(session, client_id)
    if client is None:
        raise ClientError(f"no client {client_id!r}", "client_unknown")
    return client


def set_status(session: Session, client_id: str, status: str, *, actor: str) -> OAuthClient:
    if status not in set(ClientStatus):
        raise ClientError(f"status must be one of {', '.join(ClientStatus)}")
    client = _existing(session, client_id)
    client.status = status
    audit.record(
        session,
        event="client_status",
        outcome="success",
        detail={"client_id": client_id, "status": status, "actor": actor},
    )
    return client


def rotate_secret(session: Session, hmac_keys: HmacKeys, client_id: str, *, actor: str) -> str:
    client = _existing(session, client_id)
    if client.auth_method != AuthMethod.CLIENT_SECRET_BASIC:
        raise ClientError("only client_secret_basic clients have a secret")
    secret = new_secret()
    client.secret_digest = hmac_keys.digest(CLIENT_SECRET, secret)
    audit.record(
        session, event="client_secret_rotated", outcome="success", detail={"client_id": client_id, "actor": actor}
    )
    return secret


def describe(client: OAuthClient) -> dict[str, Any]:
    """The client's registration as the CLI and admin API show it (never the secret digest)."""
    return {
        "client_id": client.client_id,
        "client_name": client.name,
        "status": client.status,
        "token_endpoint_auth_method": client.auth_method,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "grant_types": client.grant_types,
        "scope": " ".join(client.scopes),
        "acr_values": client.acr_values,
        "ssn_min_acr": client.ssn_min_acr,
        "fapi": client.fapi,
        "dpop_bound_access_tokens": client.require_dpop,
        "subject_type": client.subject_type,
        "sector_identifier": client.sector_identifier,
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "jwks_uri": client.jwks_uri,
        "jwks": client.jwks,
        "may_introspect": client.may_introspect,
    }


def spec_from_json(doc: Any) -> ClientSpec:
    """RFC 7591-style metadata (as the admin API accepts it) to a spec; unknown members are refused."""
    if not isinstance(doc, dict):
        raise ClientError("client metadata must be a JSON object")
    names = {
        "client_name": "name",
        "token_endpoint_auth_method": "auth_method",
        "redirect_uris": "redirect_uris",
        "post_logout_redirect_uris": "post_logout_redirect_uris",
        "grant_types": "grant_types",
        "scope": "scopes",
        "acr_values": "acr_values",
        "jwks": "jwks",
        "jwks_uri": "jwks_uri",
        "ssn_min_acr": "ssn_min_acr",
        "fapi": "fapi",
        "dpop_bound_access_tokens": "require_dpop",
        "subject_type": "subject_type",
        "sector_identifier": "sector_identifier",
        "backchannel_logout_uri": "backchannel_logout_uri",
        "may_introspect": "may_introspect",
    }
    unknown = set(doc) - set(names)
    if unknown:
        raise ClientError(f"unknown client metadata: {', '.join(sorted(unknown))}")
    if "client_name" not in doc:
        raise ClientError("client_name is required")
    kwargs: dict[str, Any] = {}
    for member, attr in names.items():
        if member not in doc:
            continue
        value = doc[member]
        if member == "scope":
            if not isinstance(value, str):
                raise ClientError("scope must be a space-delimited string")
            value = known_scopes.parse(value)
        elif member in ("redirect_uris", "post_logout_redirect_uris", "grant_types", "acr_values"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ClientError(f"{member} must be a list of strings")
        elif member in ("fapi", "dpop_bound_access_tokens", "may_introspect"):
            if not isinstance(value, bool):
                raise ClientError(f"{member} must be true or false")
        elif member == "jwks":
            if not isinstance(value, dict):
                raise ClientError("jwks must be a JWK Set object")
        elif member == "client_name":
            if not isinstance(value, str):  # null included: the name is required
                raise ClientError("client_name must be a string")
        elif value is not None and not isinstance(value, str):
            raise ClientError(f"{member} must be a string")
        kwargs[attr] = value
    return ClientSpec(**kwargs)


def jwks_from_file(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientError(f"jwks file is not JSON: {exc}") from None
    if isinstance(doc, dict) and "keys" not in doc and "kty" in doc:
        doc = {"keys": [doc]}  # a single JWK
    return doc
