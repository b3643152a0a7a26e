import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from card import request_signing as rs

KEY = Ed25519PrivateKey.generate()


def _signed(body: bytes = b'{"a":1}', target: str = "/v1/kiosk/logins") -> dict[str, str]:
    return rs.sign_headers(KEY, terminal_id="kiosk-1", method="POST", target=target, body=body)


def test_a_signed_request_verifies() -> None:
    headers = _signed()
    request = rs.parse_headers(headers)
    assert rs.verify(KEY.public_key(), request, method="POST", target="/v1/kiosk/logins", body=b'{"a":1}')


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("GET", "/v1/kiosk/logins", b'{"a":1}'),
        ("POST", "/v1/kiosk/logins?x=1", b'{"a":1}'),
        ("POST", "/v1/kiosk/logins", b'{"a":2}'),
    ],
)
def test_any_change_to_what_was_signed_fails(method: str, target: str, body: bytes) -> None:
    request = rs.parse_headers(_signed())
    assert not rs.verify(KEY.public_key(), request, method=method, target=target, body=body)


def test_another_kiosks_key_fails() -> None:
    request = rs.parse_headers(_signed())
    assert not rs.verify(
        Ed25519PrivateKey.generate().public_key(), request, method="POST", target="/v1/kiosk/logins", body=b'{"a":1}'
    )


@pytest.mark.parametrize("header", [rs.H_TERMINAL, rs.H_TIMESTAMP, rs.H_NONCE])
def test_changing_a_signed_header_fails(header: str) -> None:
    headers = _signed()
    headers[header] = {"Sscard-Terminal": "kiosk-2", "Sscard-Timestamp": "1", "Sscard-Nonce": "A" * 24}[header]
    request = rs.parse_headers(headers)
    assert not rs.verify(KEY.public_key(), request, method="POST", target="/v1/kiosk/logins", body=b'{"a":1}')


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({rs.H_SIGNATURE: ""}, "signature_missing"),
        ({rs.H_TIMESTAMP: "12a"}, "signature_malformed"),
        ({rs.H_NONCE: "short"}, "signature_malformed"),
        ({rs.H_SIGNATURE: "!!!"}, "signature_malformed"),
        ({rs.H_SIGNATURE: "AAAA"}, "signature_malformed"),
        ({rs.H_TERMINAL: "k\n1"}, "signature_malformed"),
    ],
)
def test_malformed_headers_are_refused_with_a_reason(change: dict[str, str], reason: str) -> None:
    headers = {**_signed(), **change}
    with pytest.raises(rs.SignatureHeaderError) as caught:
        rs.parse_headers(headers)
    assert caught.value.reason == reason


@given(
    st.dictionaries(st.sampled_from([rs.H_TERMINAL, rs.H_TIMESTAMP, rs.H_NONCE, rs.H_SIGNATURE]), st.text(max_size=120))
)
def test_arbitrary_headers_raise_only_the_header_error(headers: dict[str, str]) -> None:
    with contextlib.suppress(rs.SignatureHeaderError):
        rs.parse_headers(headers)
