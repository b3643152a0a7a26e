"""Withholding tables: the agreements that let the bank debit a payer's account, and the batches of debits sent to
the bank with one line per order. Orders change state only through payments/orders/accounting.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authsvc.database import Base, UTCDateTime, utcnow

ID = BigInteger().with_variant(Integer, "sqlite")


class WithholdingAgreement(Base):
    __tablename__ = "withholding_agreements"
    __table_args__ = (Index("ix_withholding_agreements_payer", "payer_kind", "payer", "insured_ssn"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    agreement_no: Mapped[str] = mapped_column(String(40), unique=True)  # the bank's number for it
    payer_kind: Mapped[str] = mapped_column(String(16))
    payer: Mapped[str] = mapped_column(String(64))
    insured_ssn: Mapped[str] = mapped_column(String(18))  # as the registry stores it; never logged
    # The bank's token for the account and its masked number for people: the account number itself is never held.
    account_token: Mapped[str] = mapped_column(String(64))
    account_masked: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # active, revoked
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"WithholdingAgreement({self.agreement_no} {self.status} {self.account_masked})"


class WithholdingBatch(Base):
    __tablename__ = "withholding_batches"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    batch_no: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    line_count: Mapped[int] = mapped_column(Integer)
    total_fen: Mapped[int] = mapped_column(BigInteger)
    file_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # exported, settled
    # The result file applied, so that importing it again is recognised and a different one refused.
    result_sha256: Mapped[str | None] = mapped_column(String(64))
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WithholdingLine(Base):
    __tablename__ = "withholding_lines"
    __table_args__ = (UniqueConstraint("batch_id", "seq"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("withholding_batches.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    # An order is debited in one batch at most: it leaves `created` when exported.
    order_no: Mapped[str] = mapped_column(String(32), unique=True)
    agreement_no: Mapped[str] = mapped_column(String(40))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    result_code: Mapped[str | None] = mapped_column(String(24))
    outcome: Mapped[str | None] = mapped_column(String(16))  # paid, failed, held (debited, order not payable), conflict
    bank_trade_no: Mapped[str | None] = mapped_column(String(64))
