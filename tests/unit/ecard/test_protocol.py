"""card/ecard_protocol.py: the signed messages byte for byte, JWK parsing (fuzzed: only JwkError comes out), the
RFC 7638 thumbprint, and ES256 signatures in their JWS form."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from card import ecard_protocol as protocol
from card.request_signing import b64url

KEY = ec.derive_private_key(0x1234_5678_9ABC_DEF0, ec.SECP256R1())


def test_the_enrolment_message_is_purpose_prefixed_lines() -> None:
    message = protocol.enrol_message(issuer="https://id.example.gov.cn", challenge="c" * 43, key_thumbprint="t" * 43)
    assert message == b"SSCARD-ECARD-ENROL-1\nhttps://id.example.gov.cn\n" + b"c" * 43 + b"\n" + b"t" * 43


def test_the_signin_message_binds_origin_login_portal_challenge_and_ecard() -> None:
    message = protocol.signin_message(
        origin="http://127.0.0.1:8000", login_id="L" * 32, client_id="portal-1", challenge="C" * 43, ecard_id="E" * 22
    )
    assert message.split(b"\n") == [
        b"SSCARD-ECARD-SIGNIN-1",
        b"http://127.0.0.1:8000",
        b"L" * 32,
        b"portal-1",
        b"C" * 43,
        b"E" * 22,
    ]


@pytest.mark.parametrize("bad", ["", "a\nb", "a b", "é", "x" * 513, "tab\there"])
def test_no_field_can_shift_another(bad: str) -> None:
    # A line break or space inside a field could make two different requests sign the same bytes.
    with pytest.raises(ValueError):
        protocol.signin_message(origin=bad, login_id="l" * 16, client_id="c", challenge="x", ecard_id="e")
    with pytest.raises(ValueError):
        protocol.enrol_message(issuer="https://a", challenge=bad, key_thumbprint="t")


def test_the_messages_of_the_two_purposes_never_coincide() -> None:
    enrol = protocol.enrol_message(issuer="a", challenge="b", key_thumbprint="c")
    signin = protocol.signin_message(origin="a", login_id="b", client_id="c", challenge="d", ecard_id="e")
    assert enrol.split(b"\n")[0] != signin.split(b"\n")[0]


def test_rfc7638_thumbprint_is_the_members_in_order_without_whitespace() -> None:
    import hashlib

    from authsvc.oauth.dpop import thumbprint as dpop_thumbprint

    jwk = protocol.public_jwk(KEY.public_key())
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    expected = b64url(hashlib.sha256(canonical.encode()).digest())
    assert protocol.thumbprint({**jwk, "kid": "ignored"}) == expected == dpop_thumbprint(jwk)


def test_a_jwk_round_trips_and_signatures_verify() -> None:
    jwk = protocol.public_jwk(KEY.public_key())
    key, canonical = protocol.parse_public_jwk({**jwk, "alg": "ES256", "use": "sig", "kid": "phone"})
    assert canonical == jwk and set(canonical) == {"kty", "crv", "x", "y"}
    message = b"SSCARD-ECARD-SIGNIN-1\nx"
    signature = protocol.sign(KEY, message)
    assert len(signature) == 86 and protocol.verify(key, message, signature)
    assert not protocol.verify(key, message + b"y", signature)
    other = ec.generate_private_key(ec.SECP256R1())
    assert not protocol.verify(other.public_key(), message, signature)


@pytest.mark.parametrize(
    "signature",
    ["", "!!!", b64url(bytes(64)), b64url(bytes(63)), b64url(b"\xff" * 64), "A" * 86 + "==", b64url(bytes(70))],
)
def test_malformed_signatures_are_simply_false(signature: str) -> None:
    assert not protocol.verify(KEY.public_key(), b"m", signature)


def test_a_der_signature_is_not_the_jws_form() -> None:
    from cryptography.hazmat.primitives import hashes

    der = KEY.sign(b"m", ec.ECDSA(hashes.SHA256()))
    assert not protocol.verify(KEY.public_key(), b"m", b64url(der))


def test_coordinates_must_be_full_length_and_canonical() -> None:
    jwk = protocol.public_jwk(KEY.public_key())
    short = {**jwk, "x": b64url(protocol.b64url_decode(jwk["x"]).lstrip(b"\0")[:31])}
    padded = {**jwk, "x": jwk["x"] + "="}
    for bad in (short, padded, {**jwk, "alg": "ES384"}, {**jwk, "use": "enc"}, {**jwk, "d": jwk["x"]}):
        with pytest.raises(protocol.JwkError):
            protocol.parse_public_jwk(bad)


# P-256's field prime: a coordinate is an element of the field, 0 <= c < p (SEC 1 §3.2.2.1).
_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def test_a_coordinate_beyond_the_field_is_refused_not_reduced() -> None:
    # (5, y) is on P-256; x + p still fits 32 bytes and names the same point once reduced modulo p: a second
    # encoding of one key, which the parser must not take (a JWK has one form, as the padding rules say).
    x = 5
    rhs = (x**3 - 3 * x + _B) % _P
    y = pow(rhs, (_P + 1) // 4, _P)
    assert y * y % _P == rhs
    good = {"kty": "EC", "crv": "P-256", "x": b64url(x.to_bytes(32, "big")), "y": b64url(y.to_bytes(32, "big"))}
    assert protocol.parse_public_jwk(good)[1] == good
    with pytest.raises(protocol.JwkError):
        protocol.parse_public_jwk({**good, "x": b64url((x + _P).to_bytes(32, "big"))})


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=60)
_values = st.recursive(
    _scalars, lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=5), v, max_size=3)
)
_GOOD = protocol.public_jwk(KEY.public_key())


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        _values,
        st.dictionaries(st.sampled_from(["kty", "crv", "x", "y", "alg", "use", "d", "kid"]), _values, max_size=6),
        st.builds(lambda k, v: {**_GOOD, k: v}, st.sampled_from(["kty", "crv", "x", "y", "alg", "use"]), _values),
        st.builds(
            lambda x, y: {"kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y)},
            st.binary(min_size=30, max_size=34),
            st.binary(min_size=30, max_size=34),
        ),
    )
)
def test_parsing_any_json_raises_only_jwk_error(doc: object) -> None:
    json.dumps(doc, allow_nan=True)  # only JSON-shaped input reaches the parser
    try:
        key, canonical = protocol.parse_public_jwk(doc)
    except protocol.JwkError:
        return
    assert protocol.public_jwk(key) == canonical
