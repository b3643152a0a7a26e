"""Subject identifiers (OpenID Connect Core §8): public, or pairwise per sector so that portals of different
sectors cannot join their records on `sub`."""

from __future__ import annotations

from authsvc.clients.models import OAuthClient, SubjectType
from card.request_signing import b64url
from keys.hmac_keys import PAIRWISE_SUBJECT, HmacKeys


def subject_for(client: OAuthClient, subject: str, hmac_keys: HmacKeys) -> str:
    if client.subject_type != SubjectType.PAIRWISE:
        return subject
    sector = client.sector_identifier or ""
    mac = hmac_keys.mac(PAIRWISE_SUBJECT, sector.encode() + b"\x00" + subject.encode())
    return b64url(mac)
