"""The token endpoint (RFC 6749 §3.2): authorization_code, refresh_token and client_credentials grants.

Order of checks: the DPoP proof first (a client told to retry with a nonce must still hold an unspent code), then
client authentication, then the grant. `client_credentials` touches neither the database nor anything but the
shared store for single-use values once its client and keys are cached: it is the hot path and then runs on the
event loop (`runs_inline`); the other grants write to the database and run in the thread pool.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from authsvc.audit import service as audit
from authsvc.clients.models import GrantType, OAuthClient
from authsvc.database import unit_of_work
from authsvc.oauth import client_auth, codes, grants, pkce
from authsvc.oauth import dpop as dpop_proofs
from authsvc.oauth import scopes as known_scopes
from authsvc.oauth.errors import OAuthError, invalid_grant, invalid_request
from authsvc.oauth.forms import required
from authsvc.oauth.par import NOT_FOR_USERS
from authsvc.oidc.discovery import TOKEN
from authsvc.oidc.subjects import subject_for
from authsvc.runtime import Runtime
from authsvc.sessions import service as sessions
from authsvc.tokens import issuing
from keys import hmac_keys

# Scopes that describe a citizen: meaningless (and refused) for a client acting for itself.
USER_SCOPES = frozenset({known_scopes.OPENID, known_scopes.PROFILE, known_scopes.SSN})
GRANT_TYPES = frozenset(GrantType)


def runs_inline(runtime: Runtime, form: dict[str, str], *, authorization: str | None, dpop: Sequence[str]) -> bool:
    """Whether this request may be handled on the event loop: a client_credentials grant whose client is cached with
    its keys in hand, with the signing key (and the DPoP nonce key) loaded. Everything else, and any of these that
    would read the database or fetch a client's key set over HTTP, goes to the thread pool. What stays inline is CPU
    (~0.3 ms) and at most the shared store's SET NX for a DPoP proof's or an assertion's jti."""
    return (
        form.get("grant_type") == GrantType.CLIENT_CREDENTIALS
        and runtime.keyring.fresh()
        and (not dpop or runtime.hmac_keys.loaded(label=hmac_keys.DPOP_NONCE))
        and client_auth.ready(runtime, authorization=authorization, form=form)
    )


def dpop_error(exc: dpop_proofs.DPoPError, verifier: dpop_proofs.DPoP) -> OAuthError:
    """RFC 9449 §8: `use_dpop_nonce` comes with the nonce to use."""
    headers = {"DPoP-Nonce": verifier.nonce()} if exc.error == "use_dpop_nonce" else None
    return OAuthError(exc.error, exc.description, 400, headers)


def handle(
    runtime: Runtime, form: dict[str, str], *, authorization: str | None, dpop: Sequence[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The token response body and extra headers; raises OAuthError."""
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise invalid_request("grant_type is required")
    if grant_type not in GRANT_TYPES:
        raise OAuthError(
            "unsupported_grant_type", "grant_type must be authorization_code, refresh_token or client_credentials"
        )
    url = runtime.settings.issuer + TOKEN
    verifier = dpop_proofs.for_runtime(runtime)
    try:
        proof = verifier.verify(dpop, method="POST", url=url)
    except dpop_proofs.DPoPError as exc:
        raise dpop_error(exc, verifier) from None
    client = client_auth.authenticate(runtime, authorization=authorization, form=form, endpoint=url, public=True)
    if grant_type not in client.grant_types:
        raise OAuthError("unauthorized_client", f"the client is not registered for the {grant_type} grant")
    if client.require_dpop and proof is None:
        raise OAuthError("invalid_dpop_proof", "this client's tokens are DPoP-bound: send a DPoP proof")
    jkt = proof.jkt if proof is not None else None
    if grant_type == GrantType.CLIENT_CREDENTIALS:
        body = client_credentials(runtime, client, form, jkt)
    elif grant_type == GrantType.AUTHORIZATION_CODE:
        body = authorization_code(runtime, client, form, jkt)
    else:
        body = refresh_token(runtime, client, form, jkt)
    return body, ({"DPoP-Nonce": verifier.nonce()} if proof is not None else {})


def _answer(access: str, scope: list[str], jkt: str | None, ttl: int, **extra: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "DPoP" if jkt else "Bearer",
        "expires_in": ttl,
        "scope": " ".join(scope),
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def client_credentials(runtime: Runtime, client: OAuthClient, form: dict[str, str], jkt: str | None) -> dict[str, Any]:
    allowed = [s for s in client.scopes if s not in USER_SCOPES]
    requested = known_scopes.parse(form.get("scope"))
    if not set(requested) <= set(allowed):
        raise OAuthError("invalid_scope", "a requested scope is not registered for this client's own use")
    scope = requested or allowed
    s = runtime.settings
    access, _ = issuing.access_token(
        runtime.keyring,
        issuer=s.issuer,
        audience=s.access_token_audience,
        client_id=client.client_id,
        subject=client.client_id,
        scope=" ".join(scope),
        ttl=s.access_token_ttl,
        jkt=jkt,
    )
    return _answer(access, scope, jkt, s.access_token_ttl)


def _tokens(
    runtime: Runtime,
    client: OAuthClient,
    grant_id: str,
    auth: issuing.Authentication,
    scope: list[str],
    jkt: str | None,
    *,
    nonce: str | None,
    sid: str | None,
) -> tuple[str, str | None]:
    """(access token, ID token when the scope has openid) for a citizen's grant."""
    s = runtime.settings
    subject = subject_for(client, auth.subject, runtime.hmac_keys)
    now = int(time.time())
    access, _ = issuing.access_token(
        runtime.keyring,
        issuer=s.issuer,
        audience=s.access_token_audience,
        client_id=client.client_id,
        subject=subject,
        scope=" ".join(scope),
        ttl=s.access_token_ttl,
        auth=auth,
        jkt=jkt,
        grant_id=grant_id,
        now=now,
    )
    id_token = None
    if known_scopes.OPENID in scope:
        id_token = issuing.id_token(
            runtime.keyring,
            issuer=s.issuer,
            client_id=client.client_id,
            subject=subject,
            auth=auth,
            ttl=s.id_token_ttl,
            nonce=nonce,
            sid=sid,
            access_token=access,
            now=now,
        )
    return access, id_token


def authorization_code(runtime: Runtime, client: OAuthClient, form: dict[str, str], jkt: str | None) -> dict[str, Any]:
    value = required(form, "code")
    redirect_uri = required(form, "redirect_uri")
    verifier = required(form, "code_verifier")
    code = codes.redeem(runtime.store, value)
    if code is None:
        _revoke_reused(runtime, value)
        raise invalid_grant("the code is invalid, expired or already used")
    # The code is spent whatever follows: a failed attempt never leaves it usable (no PKCE guessing).
    if code.client_id != client.client_id:
        raise invalid_grant("the code was issued to another client")
    if redirect_uri != code.redirect_uri:
        raise invalid_grant("redirect_uri differs from the authorization request's")
    if not pkce.verify(verifier, code.code_challenge):
        raise invalid_grant("code_verifier does not match the code_challenge")
    if code.dpop_jkt is not None and jkt != code.dpop_jkt:
        raise invalid_grant("the DPoP proof's key is not the one the code is bound to (dpop_jkt)")
    if NOT_FOR_USERS & set(code.scope):
        # PAR refuses these, /authorize admits what the client is registered for: a citizen's grant must never carry
        # the administration scope, whichever way the code came.
        raise OAuthError("invalid_scope", "a citizen's sign-in cannot grant a client-only scope")
    s = runtime.settings
    with unit_of_work(runtime.sessions) as db:
        if not sessions.live_for_redemption(db, code.sid):
            # Signed out between the code and its redemption: no tokens that no logout token would ever reach.
            raise invalid_grant("the sign-in this code came from has ended")
        grant = grants.create(
            db,
            client_id=client.client_id,
            subject=code.subject,
            sid=code.sid,
            scope=code.scope,
            acr=code.acr,
            amr=code.amr,
            auth_time=code.auth_time,
            ttl=s.refresh_token_ttl,
        )
        refresh = None
        if GrantType.REFRESH_TOKEN in client.grant_types:
            refresh = grants.issue_refresh_token(db, runtime, grant)
        grant_id = grant.id
    codes.remember_grant(runtime.store, value, grant_id, max(s.access_token_ttl, s.code_ttl))
    auth = issuing.Authentication(subject=code.subject, auth_time=code.auth_time, acr=code.acr, amr=code.amr)
    access, id_token = _tokens(runtime, client, grant_id, auth, code.scope, jkt, nonce=code.nonce, sid=code.sid)
    return _answer(access, code.scope, jkt, s.access_token_ttl, id_token=id_token, refresh_token=refresh)


def _revoke_reused(runtime: Runtime, value: str) -> None:
    """RFC 6749 §4.1.2: a second redemption revokes what the first one got."""
    grant_id = codes.spent_grant(runtime.store, value)
    if grant_id is None:
        return
    with unit_of_work(runtime.sessions) as db:
        if grants.revoke_by_id(db, runtime, grant_id, "code_reused"):
            audit.record(
                db,
                event="authorization_code_reused",
                outcome="failure",
                reason="grant_revoked",
                detail={"grant_id": grant_id},
            )


def refresh_token(runtime: Runtime, client: OAuthClient, form: dict[str, str], jkt: str | None) -> dict[str, Any]:
    value = required(form, "refresh_token")
    requested = known_scopes.parse(form.get("scope"))
    # One transaction of its own; a reuse has revoked the grant (committed) by the time it is refused here.
    outcome = grants.rotate(runtime, value, client_id=client.client_id, scope=requested)
    if isinstance(outcome, grants.Refused):
        raise OAuthError(outcome.error, outcome.description)
    grant = outcome.grant
    auth = issuing.Authentication(
        subject=grant.subject, auth_time=int(grant.auth_time.timestamp()), acr=grant.acr, amr=grant.amr
    )
    # Down-scoping narrows this access token only; the grant (and the next refresh token) keeps its scope.
    scope = requested or grant.scope.split()
    access, id_token = _tokens(runtime, client, grant.id, auth, scope, jkt, nonce=None, sid=grant.sid)
    ttl = runtime.settings.access_token_ttl
    return _answer(access, scope, jkt, ttl, id_token=id_token, refresh_token=outcome.refresh_token)
