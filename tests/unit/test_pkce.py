"""PKCE (RFC 7636), S256 only."""

from authsvc.oauth import pkce

# RFC 7636 Appendix B
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_rfc_7636_example() -> None:
    assert pkce.challenge_for(VERIFIER) == CHALLENGE
    assert pkce.verify(VERIFIER, CHALLENGE)


def test_wrong_or_malformed_verifiers_fail() -> None:
    assert not pkce.verify(VERIFIER[:-1] + "l", CHALLENGE)
    assert not pkce.verify(None, CHALLENGE)
    assert not pkce.verify("a" * 42, pkce.challenge_for("a" * 42))  # too short
    assert not pkce.verify("a" * 129, pkce.challenge_for("a" * 129))  # too long
    assert not pkce.verify("a" * 42 + "!", pkce.challenge_for("a" * 42 + "!"))  # not unreserved
    assert not pkce.verify(CHALLENGE, CHALLENGE)  # `plain` is not accepted: the challenge is no verifier


def test_challenge_syntax() -> None:
    assert pkce.valid_challenge(CHALLENGE)
    assert not pkce.valid_challenge(CHALLENGE + "=")
    assert not pkce.valid_challenge(VERIFIER + "x")
    assert pkce.valid_verifier("~._-" * 11)
