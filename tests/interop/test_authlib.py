"""Interoperability with Authlib, a widely used OpenID Connect client library this project did not write.

Everything runs against the service on a real port (both backends). The relying party is Authlib's own machinery
(the `OAuth2Mixin`/`OpenIDMixin` app its Flask, Django and Starlette clients are built on, with its httpx
`OAuth2Client`): it reads the discovery document and takes every endpoint URL from it, builds the authorization
request (code + PKCE S256), authenticates with `client_secret_basic` or its own `PrivateKeyJWT` (ES256, its default
assertion lifetime), exchanges and refreshes tokens, validates ID tokens against the JWKS, introspects and revokes.
Authlib has no DPoP and no PAR: DPoP proofs are made with joserfc (the JOSE library Authlib uses, also not ours) and
sent as the `DPoP` header through the client's request arguments; PAR is a POST through the client's own
authenticated `post`, followed by `create_authorization_url` with the `request_uri`.

The citizen's browser is an httpx client with a cookie jar that follows redirects; the card signs in through the
helper's endpoints with in-process card evidence (tests/fixtures/softcard.py), as the integration tests do. The
portal's own web server (redirect URI, post-logout page, back-channel logout endpoint) is a tiny HTTP server here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import (
    BaseApp,
    FrameworkIntegration,
    OAuth2Mixin,
    OpenIDMixin,
    UnsupportedTokenTypeError,
)
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from authlib.oauth2.client import DEFAULT_HEADERS
from authlib.oauth2.rfc6749.errors import MismatchingStateException
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidClaimError, JoseError
from joserfc.jwk import ECKey, KeySet

from authsvc.clients.models import AuthMethod, GrantType
from card import cryptogram
from card.request_signing import b64url_decode
from tests.fixtures.oidc import RegisteredClient, register_client
from tests.fixtures.service import PIN, LiveServer, issue
from tests.fixtures.softcard import evidence, open_card

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
CARD_PIN = "urn:sscard:acr:substantial"
HTTP_TIMEOUT = 10.0
# How long the back-channel endpoint waits for the provider's first delivery attempt (made right after the logout
# response): a bound on waiting, not a figure under test.
DELIVERY_WAIT = 20.0


# --- the portal's own web server -------------------------------------------------------------------------------


class PortalServer:
    """Redirect URIs, post-logout pages and back-channel logout endpoints (`/<portal>/backchannel`) of portals."""

    def __init__(self) -> None:
        self.visits: list[str] = []
        self.logout_tokens: dict[str, list[str]] = {}
        self.logout_content_types: list[str] = []
        self._arrived = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.visits.append(server.url + self.path)
                self._answer(200, b"<!doctype html><title>portal</title><p>signed in</p>")

            def do_POST(self) -> None:
                portal, _, endpoint = self.path.strip("/").partition("/")
                if endpoint != "backchannel":
                    self._answer(404, b"")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                tokens = parse_qs(body).get("logout_token", [])
                with server._arrived:
                    server.logout_content_types.append(self.headers.get("Content-Type", ""))
                    server.logout_tokens.setdefault(portal, []).extend(tokens)
                    server._arrived.notify_all()
                self._answer(200 if len(tokens) == 1 else 400, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for_logout_tokens(self, portals: set[str]) -> dict[str, list[str]]:
        with self._arrived:
            self._arrived.wait_for(lambda: portals <= set(self.logout_tokens), timeout=DELIVERY_WAIT)
            return {k: list(v) for k, v in self.logout_tokens.items()}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- the relying party: Authlib ------------------------------------------------------------------------------


class RelyingParty(OAuth2Mixin, OpenIDMixin, BaseApp):
    """Authlib's generic relying party (discovery, JWKS, ID token validation, logout URL), on its httpx client."""

    client_cls = OAuth2Client


def relying_party(live: LiveServer, client_id: str) -> RelyingParty:
    return RelyingParty(
        FrameworkIntegration("portal"),
        client_id=client_id,
        server_metadata_url=live.url + "/.well-known/openid-configuration",
        client_kwargs={"timeout": HTTP_TIMEOUT},
    )


class DPoPKey:
    """A DPoP key and its proofs (RFC 9449 §4.2), made with joserfc; keeps the last nonce the server supplied."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256")
        self.nonce: str | None = None

    @property
    def jkt(self) -> str:
        return self.key.thumbprint()  # RFC 7638, SHA-256

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        claims: dict[str, Any] = {"jti": generate_token(24), "htm": method, "htu": url, "iat": int(time.time())}
        if access_token is not None:
            digest = hashlib.sha256(access_token.encode("ascii")).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if self.nonce is not None:
            claims["nonce"] = self.nonce
        return jwt.encode(header, claims, self.key, algorithms=["ES256"])

    def saw(self, response: httpx.Response) -> None:
        """An httpx response hook: a server may hand out a nonce with any answer (RFC 9449 §8)."""
        if "DPoP-Nonce" in response.headers:
            self.nonce = response.headers["DPoP-Nonce"]


class Sent:
    """An httpx request hook: what the library put on the wire."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def forms(self, url: str) -> list[dict[str, str]]:
        return [
            {k: v[0] for k, v in parse_qs(r.content.decode()).items()}
            for r in self.requests
            if str(r.url) == url and r.method == "POST"
        ]


def oauth_client(
    rp: RelyingParty,
    registered: RegisteredClient,
    redirect_uri: str,
    *,
    dpop: DPoPKey | None = None,
    sent: Sent | None = None,
) -> OAuth2Client:
    """Authlib's httpx client for a registered portal, with its registered authentication method."""
    metadata = rp.load_server_metadata()
    if registered.secret is not None:
        secret: Any = registered.secret
        method = AuthMethod.CLIENT_SECRET_BASIC.value
    else:
        secret = ECKey.import_key(registered.private_jwk)
        method = AuthMethod.PRIVATE_KEY_JWT.value
    client = OAuth2Client(
        client_id=registered.client_id,
        client_secret=secret,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
        code_challenge_method="S256",
        redirect_uri=redirect_uri,
        scope="openid profile",
        token_endpoint=metadata["token_endpoint"],
        timeout=HTTP_TIMEOUT,
        event_hooks={"request": [sent] if sent else [], "response": [dpop.saw] if dpop else []},
    )
    if method == AuthMethod.PRIVATE_KEY_JWT:
        # Authlib's default audience is the endpoint's URL, which the provider accepts from ordinary clients; a FAPI
        # client must name the issuer as the only audience (FAPI 2.0 §5.3.2.1), Authlib's documented setting.
        audience = metadata["issuer"] if registered.registration["fapi"] else None
        client.register_client_auth_method(PrivateKeyJWT(token_endpoint=audience, alg="ES256"))
    return client


def id_token_claims(rp: RelyingParty, token: dict[str, Any], nonce: str) -> dict[str, Any]:
    """Authlib's ID token validation: signature against the JWKS, iss, aud, exp, nonce, at_hash; and acr, amr,
    auth_time and sid required, the acr the portal is registered for."""
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": rp.load_server_metadata()["issuer"]},
        "aud": {"essential": True, "value": rp.client_id},
        "exp": {"essential": True},
        "acr": {"essential": True, "values": [CARD_PIN]},
        "amr": {"essential": True},
        "auth_time": {"essential": True},
        "sid": {"essential": True},
    }
    return dict(rp.parse_id_token(token, nonce=nonce, claims_options=options))


def verified_jwt(rp: RelyingParty, value: str, typ: str) -> jwt.Token:
    """A JWT of the provider, its signature checked by joserfc with the published key set."""
    keys = KeySet.import_key_set(rp.fetch_jwk_set())
    algorithms = rp.load_server_metadata()["id_token_signing_alg_values_supported"]
    token = jwt.decode(value, keys, algorithms=algorithms)
    assert token.header["typ"] == typ
    return token


# --- the citizen's browser and card ---------------------------------------------------------------------------


def sign_in(live: LiveServer, browser: httpx.Client, authorization_url: str, card: Path) -> str:
    """The browser goes to the login page, the card signs the pending login through the helper's endpoints, the
    page continues: the browser lands on the portal. Returns the URL it landed on."""
    page = browser.get(authorization_url)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    login_path = page.url.path
    assert login_path.startswith("/login/"), page.url
    with httpx.Client(base_url=live.url, timeout=HTTP_TIMEOUT) as helper:  # sscard helper: no browser cookies
        answer = helper.get(login_path + "/card")
        assert answer.status_code == 200, answer.text
        context = cryptogram.web_context(cryptogram.web_origin(live.url))
        body = evidence(open_card(card), b64url_decode(answer.json()["challenge"]), "", PIN, context=context)
        done = helper.post(login_path + "/card", json=body)
        assert done.status_code == 200, done.text
    assert browser.get(live.url + login_path + "/status").json() == {"status": "done"}
    landed = browser.get(live.url + login_path + "/continue")
    assert landed.status_code == 200, landed.text
    return str(landed.url)


def callback(url: str, redirect_uri: str) -> dict[str, str]:
    assert url.startswith(redirect_uri + "?"), url
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def portal_server() -> Iterator[PortalServer]:
    server = PortalServer()
    yield server
    server.close()


@pytest.fixture
def card(live_server: LiveServer, tmp_path: Path) -> Path:
    return issue(live_server.runtime, tmp_path, generation=3).path


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=True, timeout=HTTP_TIMEOUT) as client:
        yield client


@pytest.fixture
def resource_server(live_server: LiveServer) -> RegisteredClient:
    """A resource server: client_secret_basic, client credentials only, allowed to introspect."""
    return register_client(
        live_server.runtime,
        name="Records API",
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
        grant_types=[GrantType.CLIENT_CREDENTIALS],
        may_introspect=True,
    )


def register_portal(live: LiveServer, server: PortalServer, name: str, **spec: Any) -> RegisteredClient:
    base = f"{server.url}/{name}"
    return register_client(
        live.runtime,
        name=f"门户 {name} portal",
        redirect_uris=[base + "/cb"],
        post_logout_redirect_uris=[base + "/bye"],
        backchannel_logout_uri=base + "/backchannel",
        **spec,
    )


def introspect(live: LiveServer, rs: RegisteredClient, token: str, hint: str) -> dict[str, Any]:
    """RFC 7662 through Authlib's `introspect_token`, as the resource server (client_secret_basic)."""
    rp = relying_party(live, rs.client_id)
    with OAuth2Client(rs.client_id, rs.secret, timeout=HTTP_TIMEOUT) as client:
        answer = client.introspect_token(
            rp.load_server_metadata()["introspection_endpoint"], token=token, token_type_hint=hint
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()


# --- the tests -------------------------------------------------------------------------------------------------


def test_authlib_reads_the_discovery_document_and_the_key_set(live_server: LiveServer) -> None:
    rp = relying_party(live_server, "unused")
    metadata = rp.load_server_metadata()
    assert metadata["issuer"] == live_server.url
    for name in (
        "authorization_endpoint",
        "pushed_authorization_request_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
        "end_session_endpoint",
        "jwks_uri",
    ):
        assert metadata[name].startswith(live_server.url + "/"), name
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert {"private_key_jwt", "client_secret_basic"} <= set(metadata["token_endpoint_auth_methods_supported"])
    assert "ES256" in metadata["token_endpoint_auth_signing_alg_values_supported"]
    assert "ES256" in metadata["dpop_signing_alg_values_supported"]
    assert metadata["backchannel_logout_supported"] and metadata["backchannel_logout_session_supported"]
    keys = KeySet.import_key_set(rp.fetch_jwk_set())
    assert keys.keys
    for key in keys.keys:
        assert key.kid and not key.is_private
        assert key.as_dict(private=False).get("alg") in (None, *metadata["id_token_signing_alg_values_supported"])


def test_code_flow_with_pkce_and_client_secret_basic(
    live_server: LiveServer,
    portal_server: PortalServer,
    browser: httpx.Client,
    card: Path,
    resource_server: RegisteredClient,
) -> None:
    portal = register_portal(live_server, portal_server, "a", auth_method=AuthMethod.CLIENT_SECRET_BASIC)
    redirect_uri = portal.registration["redirect_uris"][0]
    rp = relying_party(live_server, portal.client_id)
    metadata = rp.load_server_metadata()
    sent = Sent()
    with oauth_client(rp, portal, redirect_uri, sent=sent) as client:
        verifier, nonce = generate_token(48), generate_token(20)
        url, state = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        assert parse_qs(urlsplit(url).query)["code_challenge_method"] == ["S256"]
        landed = sign_in(live_server, browser, url, card)
        response = callback(landed, redirect_uri)
        assert response["state"] == state and response["iss"] == metadata["issuer"]  # RFC 9207

        token = client.fetch_token(authorization_response=landed, state=state, code_verifier=verifier)
        (form,) = sent.forms(metadata["token_endpoint"])
        assert sent.requests[-1].headers["authorization"].startswith("Basic ")
        assert form["code_verifier"] == verifier and "client_secret" not in form
        assert token["token_type"] == "Bearer"
        assert {"access_token", "id_token", "refresh_token", "expires_in"} <= set(token)
        claims = id_token_claims(rp, token, nonce)
        assert claims["amr"] == ["sc", "hwk", "pin", "mfa"]

        # userinfo through Authlib's own Bearer token handling
        info = client.get(metadata["userinfo_endpoint"])
        assert info.status_code == 200, info.text
        assert info.json()["sub"] == claims["sub"] and info.json()["name"] == "张伟"

        introspected = introspect(live_server, resource_server, token["access_token"], "access_token")
        assert introspected["active"] is True and introspected["token_type"] == "Bearer"
        assert introspected["client_id"] == portal.client_id and introspected["sub"] == claims["sub"]
        assert introspected["scope"] == "openid profile" and "cnf" not in introspected

        revoked = client.revoke_token(
            metadata["revocation_endpoint"], token=token["access_token"], token_type_hint="access_token"
        )
        assert revoked.status_code == 200
        assert introspect(live_server, resource_server, token["access_token"], "access_token") == {"active": False}
        refused = client.get(metadata["userinfo_endpoint"])
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer ")
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        # the refresh token lives on: revoking an access token does not end the grant
        refreshed = client.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
        assert refreshed["refresh_token"] != token["refresh_token"]


def test_fapi_flow_with_par_dpop_and_private_key_jwt(
    live_server: LiveServer,
    portal_server: PortalServer,
    browser: httpx.Client,
    card: Path,
    resource_server: RegisteredClient,
) -> None:
    portal = register_portal(live_server, portal_server, "fapi", fapi=True)
    redirect_uri = portal.registration["redirect_uris"][0]
    rp = relying_party(live_server, portal.client_id)
    metadata = rp.load_server_metadata()
    dpop, sent = DPoPKey(), Sent()
    with oauth_client(rp, portal, redirect_uri, dpop=dpop, sent=sent) as client:
        # a FAPI client must push its request: Authlib's plain authorization URL is refused (to the portal)
        url, state = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=generate_token(48), nonce=generate_token(20)
        )
        refused = callback(str(browser.get(url).url), redirect_uri)
        assert refused["error"] == "invalid_request" and refused["state"] == state and "code" not in refused

        # PAR: the authorization parameters, through the client's own authenticated POST, with a DPoP proof
        # binding the code to the key (RFC 9449 §10)
        verifier, nonce, state = generate_token(48), generate_token(20), generate_token(20)
        par_url = metadata["pushed_authorization_request_endpoint"]
        pushed = client.post(
            par_url,
            data={
                "response_type": "code",
                "client_id": portal.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid profile",
                "state": state,
                "nonce": nonce,
                "code_challenge": create_s256_code_challenge(verifier),
                "code_challenge_method": "S256",
            },
            auth=client.client_auth(client.token_endpoint_auth_method),
            headers={"DPoP": dpop.proof("POST", par_url)},
        )
        assert pushed.status_code == 201, pushed.text
        assert pushed.headers["content-type"].startswith("application/json")
        request_uri = pushed.json()["request_uri"]
        assert request_uri.startswith("urn:ietf:params:oauth:request_uri:") and pushed.json()["expires_in"] > 0
        (par_form,) = sent.forms(par_url)
        assertion = jwt.decode(par_form["client_assertion"], ECKey.import_key(portal.private_jwk)).claims
        issuer = rp.load_server_metadata()["issuer"]
        assert assertion["aud"] == issuer and assertion["iss"] == assertion["sub"] == portal.client_id
        assert assertion["exp"] - assertion["iat"] == 3600  # Authlib's default assertion lifetime, accepted

        url, _ = client.create_authorization_url(
            metadata["authorization_endpoint"], state=state, request_uri=request_uri
        )
        landed = sign_in(live_server, browser, url, card)
        assert callback(landed, redirect_uri)["state"] == state
        # a request_uri is single use: the same authorization URL again gets an error page, not a code
        again = browser.get(url)
        assert again.status_code == 400 and str(again.url).startswith(live_server.url)

        token_url = metadata["token_endpoint"]
        token = client.fetch_token(
            authorization_response=landed,
            state=state,
            code_verifier=verifier,
            headers={**DEFAULT_HEADERS, "DPoP": dpop.proof("POST", token_url)},
        )
        assert token["token_type"] == "DPoP"
        assert dpop.nonce is not None  # the server handed out a nonce; the next proofs carry it
        access = verified_jwt(rp, token["access_token"], "at+jwt")
        assert access.claims["cnf"] == {"jkt": dpop.jkt}  # joserfc's RFC 7638 thumbprint
        assert access.claims["client_id"] == portal.client_id
        claims = id_token_claims(rp, token, nonce)  # at_hash over the DPoP-bound access token

        def userinfo(access_token: str, *, proof: str | None = None) -> httpx.Response:
            url = metadata["userinfo_endpoint"]
            return client.request(
                "GET",
                url,
                headers={
                    "Authorization": f"DPoP {access_token}",
                    "DPoP": proof or dpop.proof("GET", url, access_token),
                },
                withhold_token=True,
            )

        proof = dpop.proof("GET", metadata["userinfo_endpoint"], token["access_token"])
        info = userinfo(token["access_token"], proof=proof)
        assert info.status_code == 200, info.text
        assert info.json()["sub"] == claims["sub"] and info.json()["birthdate"] == "1990-03-07"
        replayed = userinfo(token["access_token"], proof=proof)
        assert replayed.status_code == 401
        assert 'error="invalid_dpop_proof"' in replayed.headers["www-authenticate"]
        # Authlib's own token placement knows Bearer only: a DPoP-bound token needs the proof made as above
        with pytest.raises(UnsupportedTokenTypeError):
            client.get(metadata["userinfo_endpoint"])

        # refresh with rotation, DPoP-bound again
        refreshed = client.refresh_token(
            token_url,
            refresh_token=token["refresh_token"],
            headers={**DEFAULT_HEADERS, "DPoP": dpop.proof("POST", token_url)},
        )
        assert refreshed["token_type"] == "DPoP" and refreshed["refresh_token"] != token["refresh_token"]
        assert verified_jwt(rp, refreshed["access_token"], "at+jwt").claims["cnf"] == {"jkt": dpop.jkt}
        refreshed_claims = id_token_claims(rp, refreshed, nonce="")  # no nonce expected after a refresh
        assert (refreshed_claims["sub"], refreshed_claims["sid"]) == (claims["sub"], claims["sid"])
        assert userinfo(refreshed["access_token"]).status_code == 200

        introspected = introspect(live_server, resource_server, refreshed["access_token"], "access_token")
        assert introspected["active"] is True and introspected["token_type"] == "DPoP"
        assert introspected["cnf"] == {"jkt": dpop.jkt} and introspected["client_id"] == portal.client_id
        assert introspect(live_server, resource_server, refreshed["refresh_token"], "refresh_token")["active"]

        # revocation of the refresh token (private_key_jwt at the revocation endpoint) ends the grant
        revoked = client.revoke_token(
            metadata["revocation_endpoint"], token=refreshed["refresh_token"], token_type_hint="refresh_token"
        )
        assert revoked.status_code == 200
        assert sent.forms(metadata["revocation_endpoint"])[0]["client_assertion"]
        for value, hint in ((refreshed["refresh_token"], "refresh_token"), (refreshed["access_token"], "access_token")):
            assert introspect(live_server, resource_server, value, hint) == {"active": False}
        gone = userinfo(refreshed["access_token"])
        assert gone.status_code == 401 and gone.headers["www-authenticate"].startswith("DPoP ")
        with pytest.raises(OAuthError) as spent:
            client.refresh_token(
                token_url,
                refresh_token=refreshed["refresh_token"],
                headers={**DEFAULT_HEADERS, "DPoP": dpop.proof("POST", token_url)},
            )
        assert spent.value.error == "invalid_grant"


def test_rp_initiated_logout_reaches_the_portals_back_channels(
    live_server: LiveServer,
    portal_server: PortalServer,
    browser: httpx.Client,
    card: Path,
    resource_server: RegisteredClient,
) -> None:
    a = register_portal(live_server, portal_server, "a")  # private_key_jwt
    b = register_portal(live_server, portal_server, "b", auth_method=AuthMethod.CLIENT_SECRET_BASIC)
    rp_a, rp_b = relying_party(live_server, a.client_id), relying_party(live_server, b.client_id)
    metadata = rp_a.load_server_metadata()
    tokens: dict[str, dict[str, Any]] = {}
    for name, registered, rp in (("a", a, rp_a), ("b", b, rp_b)):
        redirect_uri = registered.registration["redirect_uris"][0]
        with oauth_client(rp, registered, redirect_uri) as client:
            verifier, nonce = generate_token(48), generate_token(20)
            url, state = client.create_authorization_url(
                metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
            )
            # a signs in with the card; b gets in silently on the browser's session
            landed = sign_in(live_server, browser, url, card) if name == "a" else str(browser.get(url).url)
            token = client.fetch_token(authorization_response=landed, state=state, code_verifier=verifier)
            tokens[name] = {**token, "claims": id_token_claims(rp, token, nonce)}
    assert tokens["a"]["claims"]["sid"] == tokens["b"]["claims"]["sid"]

    bye = a.registration["post_logout_redirect_uris"][0]
    logout = rp_a.create_logout_url(post_logout_redirect_uri=bye, id_token_hint=tokens["a"]["id_token"])
    assert logout["url"].startswith(metadata["end_session_endpoint"] + "?")
    landed = browser.get(logout["url"])
    assert landed.status_code == 200 and str(landed.url) == f"{bye}?state={logout['state']}"

    received = portal_server.wait_for_logout_tokens({"a", "b"})
    assert set(received) == {"a", "b"}, "the provider did not deliver a logout token to both portals"
    assert all(t.startswith("application/x-www-form-urlencoded") for t in portal_server.logout_content_types)
    for name, rp in (("a", rp_a), ("b", rp_b)):
        (value,) = received[name]
        logout_token = verified_jwt(rp, value, "logout+jwt")  # Back-Channel Logout 1.0 §2.4, §2.6
        registry = jwt.JWTClaimsRegistry(
            leeway=120,
            iss={"essential": True, "value": metadata["issuer"]},
            aud={"essential": True, "value": rp.client_id},
            iat={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
            events={"essential": True},
            sid={"essential": True, "value": tokens[name]["claims"]["sid"]},
            sub={"essential": True, "value": tokens[name]["claims"]["sub"]},
        )
        registry.validate(logout_token.claims)
        assert logout_token.claims["events"] == {BACKCHANNEL_EVENT: {}} and "nonce" not in logout_token.claims
        tampered = (
            value[: value.index(".")]
            + "."
            + _b64_json({**logout_token.claims, "sid": "other"})
            + value[value.rindex(".") :]
        )
        with pytest.raises(BadSignatureError):
            verified_jwt(rp, tampered, "logout+jwt")

    # the session ended: its grants are revoked, and a silent request is told to sign in
    assert introspect(live_server, resource_server, tokens["b"]["refresh_token"], "refresh_token") == {"active": False}
    redirect_uri = b.registration["redirect_uris"][0]
    with oauth_client(rp_b, b, redirect_uri) as client:
        url, state = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=generate_token(48), prompt="none"
        )
        answer = callback(str(browser.get(url).url), redirect_uri)
        assert answer["error"] == "login_required" and answer["state"] == state
        assert answer["iss"] == metadata["issuer"]


def _b64_json(claims: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


def test_authlib_detects_tampering(
    live_server: LiveServer, portal_server: PortalServer, browser: httpx.Client, card: Path
) -> None:
    portal = register_portal(live_server, portal_server, "a", auth_method=AuthMethod.CLIENT_SECRET_BASIC)
    other = register_portal(live_server, portal_server, "b", auth_method=AuthMethod.CLIENT_SECRET_BASIC)
    redirect_uri = portal.registration["redirect_uris"][0]
    rp = relying_party(live_server, portal.client_id)
    metadata = rp.load_server_metadata()
    with oauth_client(rp, portal, redirect_uri) as client:
        verifier, nonce = generate_token(48), generate_token(20)
        url, state = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        landed = sign_in(live_server, browser, url, card)
        # a forged authorization response (another state) is refused by Authlib before any request is sent
        forged = landed.replace(f"state={state}", "state=" + secrets.token_urlsafe(20))
        with pytest.raises(MismatchingStateException):
            client.fetch_token(authorization_response=forged, state=state, code_verifier=verifier)
        token = client.fetch_token(authorization_response=landed, state=state, code_verifier=verifier)
        id_token_claims(rp, token, nonce)  # the genuine one validates

        claims = jwt.decode(token["id_token"], KeySet.import_key_set(rp.fetch_jwk_set())).claims
        header, _, signature = token["id_token"].split(".")
        for changed in ({"sub": "someone-else"}, {"acr": "urn:sscard:acr:high"}, {"nonce": nonce + "x"}):
            tampered = f"{header}.{_b64_json({**claims, **changed})}.{signature}"
            with pytest.raises(BadSignatureError):
                id_token_claims(rp, {**token, "id_token": tampered}, nonce)
        unsigned = f"{_b64_json({'alg': 'none', 'typ': 'JWT'})}.{_b64_json(claims)}."
        with pytest.raises(JoseError):
            id_token_claims(rp, {**token, "id_token": unsigned}, nonce)
        with pytest.raises(InvalidClaimError, match="nonce"):  # an ID token replayed into another login
            id_token_claims(rp, token, generate_token(20))
        refreshed = client.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
        with pytest.raises(InvalidClaimError, match="at_hash"):  # an access token swapped in
            id_token_claims(rp, {**token, "access_token": refreshed["access_token"]}, nonce)
        with pytest.raises(InvalidClaimError, match="aud"):  # an ID token issued to another portal
            id_token_claims(relying_party(live_server, other.client_id), token, nonce)
