"""Every scope the provider knows, in one place. A client may be registered for a subset; a request may ask for a
subset of that."""

from __future__ import annotations

OPENID = "openid"
PROFILE = "profile"
# Ours: the social security number (`social_security_number` claim). Released only to clients registered for it,
# and only when the login reached the client's registered minimum level (OAuthClient.ssn_min_acr).
SSN = "ssn"
# Administration API (client registration for automation); for operators' back ends only.
ADMIN = "sscard:admin"
# Contribution payments API (payments/api/): create and read one's own orders. Citizens' portals and kiosks (a
# cardholder's token) and employers' back ends (client credentials) are registered for it.
PAYMENTS = "payments"
# Refunds (payments/refunds/): request, approve and reject. Operator consoles only, and only for people signed in
# there: a client-credentials token is refused even with the scope (a refund names the person who asked).
PAYMENTS_REFUND = "payments:refund"
# The electronic social security card (authsvc/ecard/): enrol a device key (after a login at the highest level),
# list and revoke one's own e-cards. The e-card app's client only.
ECARD = "ecard"

SCOPES: dict[str, str] = {
    OPENID: "OpenID Connect sign-in: the subject identifier",
    PROFILE: "name, sex and date of birth",
    SSN: "the social security number",
    ADMIN: "administration API",
    PAYMENTS: "pay social insurance contributions and see the orders you created",
    PAYMENTS_REFUND: "request, approve and reject refunds of contribution payments (operators)",
    ECARD: "enrol, list and revoke your electronic social security cards",
}


def parse(value: str | None) -> list[str]:
    """Space-delimited scope (RFC 6749 §3.3), order kept, duplicates dropped."""
    seen: dict[str, None] = {}
    for item in (value or "").split(" "):
        if item:
            seen.setdefault(item, None)
    return list(seen)
