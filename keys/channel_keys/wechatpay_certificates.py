"""WeChat Pay's platform certificates, kept current without an operator (`authsvc channel-keys
refresh-wechatpay-certificates`): fetch `GET /v3/certificates`, trust it only once it decrypts under our APIv3 key
and its signature holds, then store new certificates beside the active one and promote or retire as WeChat Pay
rotates. payments/channels/ is imported inside the functions, as in the single module before the split: loading the
keys does not load the payment code (which imports this package at start-up).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import unit_of_work, utcnow
from keys.channel_keys.kinds import ChannelKeyError, Kind, check_asymmetric
from keys.channel_keys.store import (
    Signer,
    channel_records,
    import_key,
    lock_channel,
    mark_retired,
    material,
    serial_of,
)
from keys.models import KeyRecord, KeyState
from keys.sealing import Sealer


class RefreshError(Exception):
    """The certificate list could not be fetched or trusted: nothing was stored."""


@dataclass(frozen=True)
class RefreshReport:
    listed: list[str]
    added: list[str]
    promoted: list[str]
    retired: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        return dict(self.__dict__)


def read_certificate_list(
    headers: Mapping[str, str], body: bytes, *, apiv3_keys: Sequence[bytes], known: Mapping[str, Any], now: float
) -> dict[str, x509.Certificate]:
    """The certificates of a `GET /v3/certificates` answer, by serial, once both checks hold: each certificate
    decrypts under one of our APIv3 keys (AEAD: only WeChat Pay and we hold it, which is what makes a first
    download trustworthy), and the answer's signature verifies under a platform key we hold or one it carries."""
    from payments.channels import wechatpay as wx
    from payments.channels.common import ChannelRefusal

    try:
        document = json.loads(body.decode("utf-8"))
        entries = document["data"]
        if not isinstance(entries, list) or not entries:
            raise RefreshError("the certificate list is empty")
        certificates: dict[str, x509.Certificate] = {}
        for entry in entries:
            enc = entry["encrypt_certificate"]
            resource = wx.EncryptedResource(
                algorithm=str(enc["algorithm"]),
                ciphertext=str(enc["ciphertext"]),
                nonce=str(enc["nonce"]),
                associated_data=str(enc.get("associated_data", "")),
                original_type="certificate",
            )
            pem = _decrypt_any(resource, apiv3_keys)
            cert = x509.load_pem_x509_certificate(pem)
            serial = format(cert.serial_number, "X")
            if serial != str(entry["serial_no"]).upper():
                raise RefreshError("a certificate's serial_no does not match the certificate it carries")
            check_asymmetric(cert.public_key(), "rsa")
            certificates[serial] = cert
    except (ValueError, KeyError, TypeError, AttributeError, ChannelKeyError) as exc:
        raise RefreshError(f"the certificate list is not WeChat Pay's format ({type(exc).__name__})") from None
    keys = dict(known)
    for serial, cert in certificates.items():
        keys.setdefault(serial, cert.public_key())
    try:
        wx.verify_callback(headers, body, wx.PlatformKeys(keys), now=now)
    except ChannelRefusal as refusal:
        raise RefreshError(f"the certificate list's signature does not hold: {refusal.message}") from None
    return certificates


def _decrypt_any(resource: Any, apiv3_keys: Sequence[bytes]) -> bytes:
    from payments.channels import wechatpay as wx
    from payments.channels.common import ChannelRefusal

    if not apiv3_keys:
        raise RefreshError("no APIv3 key is stored: import one with `authsvc channel-keys import --kind apiv3-key`")
    for key in apiv3_keys:
        try:
            return wx.decrypt_resource(resource, key)
        except ChannelRefusal as refusal:
            if refusal.reason != "decryption":
                raise RefreshError(f"a certificate is not decryptable: {refusal.message}") from None
    raise RefreshError("a certificate does not decrypt under any stored APIv3 key")


def apply_certificate_list(
    session: Session, sealer: Sealer, certificates: Mapping[str, x509.Certificate], *, now: datetime | None = None
) -> RefreshReport:
    """Store the listed certificates we lack (`next` beside an active one, so both verify at once), retire expired
    ones, and when the active certificate has expired or WeChat Pay no longer lists it, promote the newest listed
    one: a rotation at WeChat Pay needs no operator."""
    now = now or utcnow()
    lock_channel(session, "wechatpay")
    stored = {
        serial_of(r): r for r in channel_records(session, "wechatpay", Kind.PLATFORM_CERTIFICATE, for_update=True)
    }
    added, promoted, retired = [], [], []
    for serial, cert in sorted(certificates.items(), key=lambda item: item[1].not_valid_before_utc):
        if serial in stored or cert.not_valid_after_utc <= now:
            continue
        record = import_key(
            session,
            sealer,
            channel="wechatpay",
            kind=Kind.PLATFORM_CERTIFICATE,
            data=cert.public_bytes(serialization.Encoding.PEM),
            now=now,
        )
        stored[serial] = record
        added.append(record.kid)

    def expiry(record: KeyRecord) -> datetime:
        assert record.certificate_pem is not None
        return x509.load_pem_x509_certificate(record.certificate_pem.encode()).not_valid_after_utc

    for record in stored.values():
        if record.state != KeyState.RETIRED and expiry(record) <= now:
            mark_retired(record, now)
            retired.append(record.kid)
    active = next((r for r in stored.values() if r.state == KeyState.ACTIVE), None)
    if active is None or serial_of(active) not in certificates:
        candidates = [
            r
            for s, r in stored.items()
            if r.state == KeyState.NEXT and s in certificates and certificates[s].not_valid_before_utc <= now
        ]
        if candidates:
            newest = max(candidates, key=lambda r: certificates[serial_of(r) or ""].not_valid_before_utc)
            if active is not None:
                mark_retired(active, now)
                retired.append(active.kid)
            newest.state = KeyState.ACTIVE
            newest.activated_at = now
            promoted.append(newest.kid)
    session.flush()
    return RefreshReport(sorted(certificates), added, promoted, retired)


def fetch_certificate_list(
    http: Any, *, base_url: str, mchid: str, signer: Signer, now: float | None = None
) -> tuple[dict[str, str], bytes]:
    """`GET /v3/certificates`, signed with the merchant API key; (headers, body) of a 200, else RefreshError."""
    from payments.channels import wechatpay as wx

    if signer.serial is None:
        raise RefreshError("the merchant key has no certificate serial")
    path = "/v3/certificates"
    authorization = wx.authorization_header(
        method="GET",
        url=path,
        body="",
        mchid=mchid,
        serial_no=signer.serial,
        private_key=signer.private_key,
        timestamp=None if now is None else int(now),
    )
    try:
        response = http.get(
            base_url.rstrip("/") + path,
            headers={"Authorization": authorization, "Accept": "application/json", "User-Agent": "sscard"},
        )
    except Exception as exc:  # httpx.HTTPError and friends: the outcome is "could not fetch", whatever the cause
        raise RefreshError(f"WeChat Pay did not answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise RefreshError(f"WeChat Pay answered HTTP {response.status_code}")
    return dict(response.headers), response.content


def refresh_wechatpay_certificates(
    sessions: sessionmaker[Session],
    sealer: Sealer,
    http: Any,
    *,
    base_url: str,
    mchid: str,
    clock: Callable[[], float] = time.time,
) -> RefreshReport:
    """Fetch, check and store WeChat Pay's platform certificates (`authsvc channel-keys
    refresh-wechatpay-certificates`, scheduled e.g. every 12 hours). The network call runs outside any transaction."""
    with unit_of_work(sessions) as session:
        current = material(session, sealer, "wechatpay")
    if current.signer is None:
        raise RefreshError("no active WeChat Pay merchant key: import one with --kind merchant-key --serial S")
    headers, body = fetch_certificate_list(http, base_url=base_url, mchid=mchid, signer=current.signer, now=clock())
    certificates = read_certificate_list(
        headers, body, apiv3_keys=current.secrets, known=current.verify_keys, now=clock()
    )
    with unit_of_work(sessions) as session:
        return apply_certificate_list(session, sealer, certificates)
