"""`sscard helper`'s loopback server: only the service's own origin may use it (CORS, Private Network Access,
Host header against DNS rebinding); its failures reach the page as JSON."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.client import HTTPConnection

import pytest

from card.helper import HelperConfig, HelperServer, pin_source

SERVICE = "https://id.example.gov.cn"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def helper() -> Iterator[HelperServer]:
    config = HelperConfig(service="http://127.0.0.1:9", reader="none", pin=lambda _: "123456", port=_free_port())
    server = HelperServer(config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _call(server: HelperServer, method: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict, dict]:
    port = server.server_address[1]
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, "/sign", body=body or None, headers={"Host": f"127.0.0.1:{port}", **headers})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), json.loads(raw) if raw else {}


def test_preflight_is_answered_for_the_service_origin_only(helper: HelperServer) -> None:
    origin = "http://127.0.0.1:9"
    asked = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    asked["Access-Control-Request-Private-Network"] = "true"
    status, headers, _ = _call(helper, "OPTIONS", asked)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == origin
    assert headers["Access-Control-Allow-Private-Network"] == "true"
    status, headers, _ = _call(helper, "OPTIONS", {**asked, "Origin": "https://evil.example"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers


def test_other_origins_and_rebinding_hosts_are_refused(helper: HelperServer) -> None:
    body = json.dumps({"login": "A" * 32}).encode()
    json_type = {"Content-Type": "application/json"}
    assert _call(helper, "POST", {**json_type, "Origin": "https://evil.example"}, body)[0] == 403
    assert _call(helper, "POST", json_type, body)[0] == 403  # no Origin at all: not a page of the service
    rebound = {**json_type, "Origin": "http://127.0.0.1:9", "Host": "evil.example"}
    assert _call(helper, "POST", rebound, body)[0] == 403


def test_bad_requests_and_service_failures_are_json_for_the_page(helper: HelperServer) -> None:
    headers = {"Content-Type": "application/json", "Origin": "http://127.0.0.1:9"}
    status, _, answer = _call(helper, "POST", headers, b'{"login": "../x"}')
    assert (status, answer["error"]) == (400, "invalid_request")
    status, cors, answer = _call(helper, "POST", headers, json.dumps({"login": "A" * 32}).encode())
    assert (status, answer["error"]) == (422, "service_unreachable")
    assert cors["Access-Control-Allow-Origin"] == "http://127.0.0.1:9"


def test_the_pin_comes_from_a_file_then_the_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pin_file = tmp_path / "pin"
    pin_file.write_text("654321\n")
    assert pin_source(str(pin_file), environ={"SSCARD_PIN": "111111"})("Portal") == "654321"
    assert pin_source(None, environ={"SSCARD_PIN": "111111"})("Portal") == "111111"
    assert HelperConfig(service=SERVICE + ":443/x", reader="r", pin=lambda _: "").origin == SERVICE


def test_a_content_length_of_unicode_digits_is_refused_as_json(helper: HelperServer) -> None:
    headers = {"Content-Type": "application/json", "Origin": "http://127.0.0.1:9", "Content-Length": "²"}
    status, _, answer = _call(helper, "POST", headers)
    assert (status, answer["error"]) == (413, "body_too_large")


def test_an_internationalised_service_is_served_for_the_origin_a_browser_sends() -> None:
    # A browser's Origin header holds the A-label (punycode) form of a .政务 (xn--zfr164b) name.
    config = HelperConfig(service="https://社保.政务/sso", reader="r", pin=lambda _: "")
    assert config.origin == "https://xn--ruqr22h.xn--zfr164b"
