"""private_key_jwt with a registered `jwks_uri` (served by a local HTTP server): it works, a client's key rotation is
picked up (an unknown kid refetches, rate-limited), and a JWKS URI that is down, slow, too large or answers garbage
gives `invalid_client`, never a 500 or a hang. Also where /token runs: client_credentials on the event loop only when
nothing would block it (client and keys cached)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm

from authsvc.app import create_app
from authsvc.cli import prepare
from authsvc.oauth import client_auth, token_endpoint
from authsvc.runtime import Runtime
from tests.fixtures.oidc import RegisteredClient, basic_auth, client_assertion, register_client
from tests.fixtures.service import free_port
from tests.integration.oauth.flows import ISSUER, post, secret_client

CC = {"grant_type": "client_credentials"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    return {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "ES256", "use": "sig"}


@dataclass
class JwksServer:
    """Answers GET /jwks with whatever `respond` does; counts the fetches."""

    url: str
    respond: Callable[[BaseHTTPRequestHandler], None]
    fetches: int = 0
    release: threading.Event = field(default_factory=threading.Event)  # ends a deliberately slow answer

    def serve_keys(self, *keys: dict[str, Any]) -> None:
        body = json.dumps({"keys": list(keys)}).encode()
        self.respond = lambda handler: _answer(handler, 200, body, "application/jwk-set+json")


def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    port = free_port()
    state = JwksServer(f"http://127.0.0.1:{port}/jwks", respond=lambda h: _answer(h, 404, b""))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            state.respond(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def quick_jwks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short fetch deadline, so that the slow-server cases finish quickly (nothing here asserts a duration)."""
    monkeypatch.setattr(client_auth, "JWKS_TIMEOUT", 0.5)


def _client(runtime: Runtime, server: JwksServer) -> tuple[RegisteredClient, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    registered = register_client(
        runtime, jwks_uri=server.url, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[]
    )
    registered.private_key, registered.kid = key, "k1"
    return registered, key


def _assertion_form(rc: RegisteredClient, **kwargs: Any) -> dict[str, str]:
    return {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(rc, ISSUER + "/token", **kwargs),
    }


def _token(client: TestClient, rc: RegisteredClient, **kwargs: Any) -> Any:
    return post(client, "/token", {**CC, **_assertion_form(rc, **kwargs)})


def _refused(answer: Any) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"


def test_jwks_uri_client_authenticates(client: TestClient, runtime: Runtime, jwks_server: JwksServer) -> None:
    rc, key = _client(runtime, jwks_server)
    jwks_server.serve_keys(_jwk(key, "k1"))
    assert _token(client, rc).status_code == 200
    assert _token(client, rc).status_code == 200
    assert jwks_server.fetches == 1  # cached for JWKS_TTL
    # A key the client never published is refused; so is a forged signature under a published kid.
    stranger = ec.generate_private_key(ec.SECP256R1())
    _refused(_token(client, rc, key=stranger))
    _refused(_token(client, rc, key=stranger, kid="k9"))


def test_key_rotation_at_the_client_refetches_rate_limited(
    client: TestClient, runtime: Runtime, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, old = _client(runtime, jwks_server)
    jwks_server.serve_keys(_jwk(old, "k1"))
    assert _token(client, rc).status_code == 200
    new = ec.generate_private_key(ec.SECP256R1())
    jwks_server.serve_keys(_jwk(new, "k2"))
    # Within JWKS_MIN_INTERVAL of the last fetch an unknown kid does not refetch: a flood of made-up kids cannot
    # turn the service into a load generator against the client's server.
    for _ in range(5):
        _refused(_token(client, rc, key=new, kid="k2"))
    assert jwks_server.fetches == 1
    monkeypatch.setattr(client_auth, "JWKS_MIN_INTERVAL", 0)  # the interval has passed
    assert _token(client, rc, key=new, kid="k2").status_code == 200
    assert jwks_server.fetches == 2
    _refused(_token(client, rc, key=old, kid="k1"))  # withdrawn by the client
    # A set that later fails to fetch keeps the last good keys.
    jwks_server.respond = lambda handler: _answer(handler, 503, b"")
    monkeypatch.setattr(client_auth, "JWKS_TTL", 0)
    assert _token(client, rc, key=new, kid="k2").status_code == 200


def _large(handler: BaseHTTPRequestHandler) -> None:
    _answer(handler, 200, json.dumps({"keys": [], "pad": "x" * (client_auth.JWKS_MAX_BYTES + 10)}).encode())


def _large_undeclared(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    handler.wfile.write(b'{"keys": [], "pad": "' + b"x" * (client_auth.JWKS_MAX_BYTES + 10) + b'"}')
    handler.close_connection = True


def _redirect(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(302)
    handler.send_header("Location", "http://127.0.0.1:9/jwks")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


GARBAGE: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {
    "server_error": lambda h: _answer(h, 500, b'{"keys": []}'),
    "not_json": lambda h: _answer(h, 200, b"<html>keys</html>"),
    "not_utf8": lambda h: _answer(h, 200, b"\xff\xfe\x00{"),
    "not_a_jwk_set": lambda h: _answer(h, 200, b'{"keys": "k1"}'),
    "a_list": lambda h: _answer(h, 200, b"[1, 2]"),
    "malformed_keys": lambda h: _answer(h, 200, b'{"keys": [{"kty": "EC", "kid": "k1", "crv": "P-256", "x": "!"}, 7]}'),
    "private_keys_only": lambda h: None,  # replaced in the test: the client's private JWK is never used
    "too_large": _large,
    "too_large_undeclared": _large_undeclared,
    "redirect": _redirect,
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_a_bad_jwks_uri_is_invalid_client(
    kind: str, client: TestClient, runtime: Runtime, jwks_server: JwksServer
) -> None:
    rc, key = _client(runtime, jwks_server)
    if kind == "private_keys_only":
        private = {**json.loads(ECAlgorithm.to_jwk(key)), "kid": "k1", "alg": "ES256"}
        jwks_server.serve_keys(private)
    else:
        jwks_server.respond = GARBAGE[kind]
    _refused(_token(client, rc))
    assert jwks_server.fetches == 1


def test_a_jwks_uri_that_is_down_is_invalid_client(client: TestClient, runtime: Runtime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    rc = register_client(
        runtime,
        jwks_uri=f"http://127.0.0.1:{free_port()}/jwks",  # nothing listens there
        grant_types=["client_credentials"],
        scopes=["sscard:admin"],
        redirect_uris=[],
    )
    rc.private_key, rc.kid = key, "k1"
    _refused(_token(client, rc))


def _slow_headers(server: JwksServer) -> Callable[[BaseHTTPRequestHandler], None]:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        server.release.wait(30)  # answers only when the test ends

    return respond


def _dripping(server: JwksServer) -> Callable[[BaseHTTPRequestHandler], None]:
    """Headers at once, then a byte at a time: each read is quick, the whole never completes in time."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.wfile.write(b'{"keys": [')
        handler.wfile.flush()
        while not server.release.wait(0.05):
            try:
                handler.wfile.write(b" ")
                handler.wfile.flush()
            except OSError:
                return

    return respond


@pytest.mark.parametrize("slow", [_slow_headers, _dripping])
def test_a_slow_jwks_uri_is_invalid_client(
    slow: Callable[[JwksServer], Callable[[BaseHTTPRequestHandler], None]],
    client: TestClient,
    runtime: Runtime,
    jwks_server: JwksServer,
    quick_jwks: None,
) -> None:
    rc, _ = _client(runtime, jwks_server)
    jwks_server.respond = slow(jwks_server)
    _refused(_token(client, rc))


# --- Where client_credentials runs: inline on the event loop only when nothing on its path can block. ---


@pytest.fixture
def cached_runtime(settings_factory) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    """Caches on, as in production (the suite's default runtime re-reads everything on every request)."""
    rt = Runtime(settings_factory(key_cache_seconds=30))
    prepare(rt, migrate=False)
    yield rt
    rt.close()


@pytest.fixture
def threads_seen(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each client_credentials grant: True if it ran in a worker thread, False on the event loop's thread."""
    seen: list[bool] = []
    real = token_endpoint.client_credentials

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread().name.startswith("AnyIO worker thread"))
        return real(*args, **kwargs)

    monkeypatch.setattr(token_endpoint, "client_credentials", recording)
    return seen


def test_client_credentials_runs_inline_only_when_nothing_blocks(
    cached_runtime: Runtime, jwks_server: JwksServer, threads_seen: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = cached_runtime
    secret = secret_client(runtime, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[])
    rc, key = _client(runtime, jwks_server)
    jwks_server.serve_keys(_jwk(key, "k1"))
    basic = {"Authorization": basic_auth(secret.client_id, secret.secret or "")}
    with TestClient(create_app(runtime=runtime)) as client:
        # Cold: the client row (a database read) and the key set (an HTTP fetch) are not in hand: thread pool.
        assert post(client, "/token", CC, basic).status_code == 200
        assert _token(client, rc).status_code == 200
        # Warm: both inline.
        assert post(client, "/token", CC, basic).status_code == 200
        assert _token(client, rc).status_code == 200
        assert threads_seen == [True, True, False, False]
        # An unknown kid once the rate limit allows a refetch: the fetch is due, so the thread pool (refused there).
        stranger = ec.generate_private_key(ec.SECP256R1())
        monkeypatch.setattr(client_auth, "JWKS_MIN_INTERVAL", 0)
        assert not client_auth.ready(runtime, authorization=None, form=_assertion_form(rc, key=stranger, kid="k7"))
        _refused(_token(client, rc, key=stranger, kid="k7"))
        assert jwks_server.fetches == 2
        # Within the rate limit no refetch can happen: inline is safe (and still refused).
        monkeypatch.setattr(client_auth, "JWKS_MIN_INTERVAL", 30)
        assert client_auth.ready(runtime, authorization=None, form=_assertion_form(rc, key=stranger, kid="k7"))
        _refused(_token(client, rc, key=stranger, kid="k7"))
        assert jwks_server.fetches == 2
        # A made-up client id is a database read the first time only.
        made_up = {"Authorization": basic_auth("no-such-client", "x")}
        assert not client_auth.ready(runtime, authorization=made_up["Authorization"], form={})
        _refused(post(client, "/token", CC, made_up))
        assert client_auth.ready(runtime, authorization=made_up["Authorization"], form={})
        # Other grants always go to the thread pool.
        assert not token_endpoint.runs_inline(
            runtime, {"grant_type": "refresh_token"}, authorization=basic["Authorization"], dpop=[]
        )
        # When the client cache or the keyring is about to be re-read, the request goes to the thread pool.
        assert token_endpoint.runs_inline(runtime, CC, authorization=basic["Authorization"], dpop=[])
        assert not client_auth.ready(runtime, authorization=basic["Authorization"], form={}, margin=60)
        assert not runtime.keyring.fresh(margin=60)
