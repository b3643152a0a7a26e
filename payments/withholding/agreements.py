"""Withholding agreements: a payer's permission for the bank to debit an account for one insured person's
contributions. The account is known only by the bank's token and a masked number."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authsvc.registry.masking import mask_ssn
from authsvc.registry.ssn import InvalidSSN, normalize
from payments.orders.domain import PayerKind
from payments.withholding.models import WithholdingAgreement

ACTIVE, REVOKED = "active", "revoked"

_AGREEMENT_NO = re.compile(r"[A-Za-z0-9_\-]{1,40}")  # payments/withholding/files.py: the debit file's field
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{8,64}")
_MASKED = re.compile(r"[0-9]{0,6}\*{2,}[0-9]{2,4}")  # never more than the first six and last four digits


class AgreementError(ValueError):
    """An agreement change refused, or an order that needs an agreement which does not exist; nothing written."""


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise AgreementError(f"{what} is malformed")
    return value


def add_agreement(
    db: Session,
    *,
    agreement_no: str,
    payer_kind: str,
    payer: str,
    insured_ssn: str,
    account_token: str,
    account_masked: str,
    signed_at: datetime,
) -> WithholdingAgreement:
    """Record an agreement the bank confirmed. One active agreement per payer and insured person: a new account is
    a new agreement after the old one is revoked."""
    _check(agreement_no, _AGREEMENT_NO, "agreement number")
    _check(account_token, _TOKEN, "account token")
    _check(account_masked, _MASKED, "masked account number (at most the first 6 and last 4 digits, the rest *)")
    try:
        kind = PayerKind(payer_kind)
    except ValueError:
        raise AgreementError(f"payer kind must be one of {[k.value for k in PayerKind]}") from None
    if not payer or len(payer) > 64 or not payer.isprintable():
        raise AgreementError("payer is 1 to 64 printable characters")
    try:
        # As orders hold it (payments/orders/domain.validate): a mistyped number would match no order, ever.
        insured_ssn = normalize(insured_ssn)
    except InvalidSSN as exc:
        raise AgreementError(f"insured SSN: {exc}") from None
    if active_agreement(db, kind.value, payer, insured_ssn) is not None:
        raise AgreementError(f"{kind.value} {payer} already has an active agreement for {mask_ssn(insured_ssn)}")
    agreement = WithholdingAgreement(
        agreement_no=agreement_no,
        payer_kind=kind.value,
        payer=payer,
        insured_ssn=insured_ssn,
        account_token=account_token,
        account_masked=account_masked,
        status=ACTIVE,
        signed_at=signed_at,
    )
    db.add(agreement)
    try:
        with db.begin_nested():
            db.flush()
    except IntegrityError:
        raise AgreementError(f"agreement {agreement_no} already recorded") from None
    return agreement


def revoke_agreement(db: Session, agreement_no: str, *, now: datetime) -> WithholdingAgreement:
    """Revoke: orders not yet exported are no longer debited (export fails them). Revoking twice is refused, so
    that an operator's typo of another number does not pass unnoticed."""
    agreement = db.scalars(
        select(WithholdingAgreement).where(WithholdingAgreement.agreement_no == agreement_no).with_for_update()
    ).one_or_none()
    if agreement is None:
        raise AgreementError(f"no agreement {agreement_no!r}")
    if agreement.status != ACTIVE:
        raise AgreementError(f"agreement {agreement_no} is already {agreement.status}")
    agreement.status, agreement.revoked_at = REVOKED, now
    db.flush()
    return agreement


def active_agreement(db: Session, payer_kind: str, payer: str, insured_ssn: str) -> WithholdingAgreement | None:
    return db.scalars(
        select(WithholdingAgreement).where(
            WithholdingAgreement.payer_kind == payer_kind,
            WithholdingAgreement.payer == payer,
            WithholdingAgreement.insured_ssn == insured_ssn,
            WithholdingAgreement.status == ACTIVE,
        )
    ).first()


def require_agreement(db: Session, payer_kind: str, payer: str, insured_ssn: str) -> WithholdingAgreement:
    """The active agreement an order with channel "withholding" will be debited under; AgreementError if there is
    none (call it when such an order is created: a refusal then is better than a failed debit weeks later)."""
    agreement = active_agreement(db, str(payer_kind), payer, insured_ssn)
    if agreement is None:
        raise AgreementError(
            f"no active withholding agreement for this payer and {mask_ssn(insured_ssn)}: sign one at the bank first"
        )
    return agreement
