"""Strict form parsing (RFC 6749 §3.2) and DPoP proof parsing never fail with anything but their own errors."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsvc.oauth import forms
from authsvc.oauth.dpop import DPoP, DPoPError
from authsvc.oauth.errors import OAuthError
from authsvc.store.memory import MemoryStore

FORM = "application/x-www-form-urlencoded"


def test_parses_and_decodes() -> None:
    body = b"grant_type=authorization_code&code=a%2Bb&redirect_uri=https%3A%2F%2Fp.example%2Fcb&name=%E5%BC%A0+x"
    assert forms.parse(FORM, body) == {
        "grant_type": "authorization_code",
        "code": "a+b",
        "redirect_uri": "https://p.example/cb",
        "name": "张 x",
    }


def test_empty_values_count_as_absent_and_charset_may_be_named() -> None:
    assert forms.parse(FORM + "; charset=UTF-8", b"scope=&grant_type=x") == {"grant_type": "x"}
    assert forms.parse(FORM, b"") == {}


@pytest.mark.parametrize(
    ("content_type", "body", "why"),
    [
        ("application/json", b'{"grant_type":"x"}', "must be application/x-www-form-urlencoded"),
        (None, b"grant_type=x", "must be application/x-www-form-urlencoded"),
        (FORM + "; charset=latin-1", b"grant_type=x", "UTF-8"),
        (FORM, b"code=a&code=b", "repeated"),
        (FORM, b"code=&code=b", "repeated"),
        (FORM, b"code=%FF", "well-formed"),
        (FORM, "code=\u00e9".encode(), "well-formed"),
        (FORM, b"code", "well-formed"),
        (FORM, b"a=1&&b=2", "well-formed"),
        (FORM, b"code=%00", "control characters"),
    ],
)
def test_refusals_are_invalid_request(content_type: str | None, body: bytes, why: str) -> None:
    with pytest.raises(OAuthError) as caught:
        forms.parse(content_type, body)
    assert caught.value.error == "invalid_request" and why in caught.value.description


def test_too_many_fields() -> None:
    with pytest.raises(OAuthError):
        forms.parse(FORM, "&".join(f"p{i}=1" for i in range(100)).encode())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from([FORM, FORM + ";charset=utf-8", "text/plain", "", None]))
def test_fuzz_form_parser(body: bytes, content_type: str | None) -> None:
    try:
        parsed = forms.parse(content_type, body)
    except OAuthError as exc:
        assert exc.error == "invalid_request"
    else:
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in parsed.items())


@settings(max_examples=200)
@given(st.text(max_size=200).map(lambda s: s.encode("utf-8")))
def test_fuzz_form_parser_with_text(body: bytes) -> None:
    try:
        forms.parse(FORM, body)
    except OAuthError as exc:
        assert exc.error == "invalid_request"


class _Macs:
    def mac(self, label: str, data: bytes) -> bytes:
        return hmac.new(b"k" * 32, label.encode() + data, hashlib.sha256).digest()


_b64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=80)


@settings(max_examples=300)
@given(
    st.one_of(
        st.text(max_size=300),
        st.builds(lambda a, b, c: f"{a}.{b}.{c}", _b64, _b64, _b64),
        st.builds(
            lambda header, body: _segments(header, body),
            st.dictionaries(
                st.sampled_from(["typ", "alg", "jwk", "kid"]),
                st.one_of(
                    st.text(max_size=20),
                    st.integers(),
                    st.none(),
                    st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d"]), st.text(max_size=50)),
                ),
            ),
            st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=20), st.integers(), st.floats())),
        ),
    )
)
def test_fuzz_dpop_proof_parsing(proof: str) -> None:
    verifier = DPoP(MemoryStore(), _Macs(), window=60, nonce_required=False)
    try:
        verifier.verify([proof], method="POST", url="https://id.example/token")
    except DPoPError as exc:
        assert exc.error in ("invalid_dpop_proof", "use_dpop_nonce")
    else:
        pytest.fail("a random proof was accepted")


def _segments(header: dict[str, object], body: dict[str, object]) -> str:
    import base64
    import json

    def enc(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{enc({'typ': 'dpop+jwt', 'alg': 'ES256', **header})}.{enc(body)}.c2ln"


@pytest.mark.parametrize("code", range(0x80))
def test_control_characters_are_c0_but_tab_lf_cr(code: int) -> None:
    body = b"grant_type=x&code=a%" + f"{code:02X}".encode() + b"b"
    if code < 0x20 and chr(code) not in "\t\n\r":
        with pytest.raises(OAuthError, match="control characters"):
            forms.parse(FORM, body)
    else:
        assert forms.parse(FORM, body)["code"] == "a" + chr(code) + "b"
