"""Importing the bank's result file: verified (the bank's detached signature), checked against its batch as a whole
(same batch, same count and total, every line one of the batch's with its order and amount, no line twice), then
applied line by line through payments/orders/accounting.py in the caller's unit of work. Anything wrong refuses the
whole file with nothing written. The same file again changes nothing; another file for a settled batch is refused.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from payments.channels import bank
from payments.channels.common import ChannelRefusal
from payments.ledger import accounts
from payments.ledger.service import credit, debit, post
from payments.orders import accounting
from payments.orders.states import Reason
from payments.withholding import files
from payments.withholding.batches import CHANNEL, batch_by_no, batch_lines

log = logging.getLogger("sscard.payments.withholding")


class ResultRefused(ValueError):
    """The result file was not applied at all. `reason` is stable: signature, malformed, merchant, unknown_batch,
    mismatch, conflicting_result."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class Imported:
    batch_no: str
    already_imported: bool = False
    paid: int = 0
    paid_fen: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    held: list[str] = field(default_factory=list)  # charged by the bank, but the order was no longer payable
    conflicts: list[str] = field(default_factory=list)  # not debited says the bank, paid says the order

    def report(self) -> dict[str, object]:
        return {
            "batch_no": self.batch_no,
            "already_imported": self.already_imported,
            "paid": self.paid,
            "paid_fen": self.paid_fen,
            "failed": dict(self.failed),
            "held": self.held,
            "conflicts": self.conflicts,
        }


def import_result(
    db: Session, data: bytes, signature: bytes, *, merchant: str, bank_keys: bank.KeyRing, now: datetime
) -> Imported:
    try:
        bank.verify_file(bank_keys, files.RESULT, data, signature)
    except ChannelRefusal as refusal:
        raise ResultRefused("signature", refusal.message) from None
    try:
        result = files.parse_result(data)
    except files.FileError as exc:
        raise ResultRefused("malformed", str(exc)) from None
    if result.merchant != merchant:
        raise ResultRefused("merchant", "the result file is for another merchant")
    batch = batch_by_no(db, result.batch_no, for_update=True)
    if batch is None:
        raise ResultRefused("unknown_batch", f"no batch {result.batch_no}")
    digest = hashlib.sha256(data).hexdigest()
    if batch.result_sha256 is not None:
        if batch.result_sha256 == digest:
            return Imported(batch.batch_no, already_imported=True)
        raise ResultRefused("conflicting_result", f"batch {batch.batch_no} was settled by another result file")
    ours = batch_lines(db, batch)
    if len(result.lines) != batch.line_count or result.total_fen != batch.total_fen or len(ours) != batch.line_count:
        raise ResultRefused("mismatch", "count or total differs from the batch")
    by_seq = {line.seq: line for line in ours}
    seen: set[str] = set()
    for line in result.lines:
        mine = by_seq.get(line.seq)
        if mine is None or mine.order_no != line.order_no or mine.amount_fen != line.amount_fen:
            raise ResultRefused("mismatch", f"result line {line.seq} is not the batch's line {line.seq}")
        if line.order_no in seen:
            raise ResultRefused("mismatch", f"order of line {line.seq} appears twice")
        seen.add(line.order_no)
    imported = Imported(batch.batch_no)
    for line in result.lines:
        mine = by_seq[line.seq]
        mine.result_code = line.code.value
        if line.code is files.ResultCode.SUCCESS:
            mine.bank_trade_no = line.bank_trade_no
            outcome = accounting.mark_paid(db, line.order_no, amount_fen=line.amount_fen)
            # Already paid is the same debit seen earlier by a query (payments/recovery): nothing more to post.
            if outcome.changed or (outcome.refused is not None and outcome.refused.reason is Reason.DUPLICATE):
                mine.outcome = "paid"
                imported.paid += 1
                imported.paid_fen += line.amount_fen
            else:
                # The bank took the money but the order was closed or failed meanwhile: the money is real, so
                # clearing owes it and suspense holds it for review, never the fund.
                mine.outcome = "held"
                imported.held.append(line.order_no)
                post(
                    db,
                    f"withholding:{batch.batch_no}:{line.seq}:suspense",
                    "held_withholding",
                    [
                        debit(accounts.clearing(CHANNEL), line.amount_fen),
                        credit(accounts.suspense(CHANNEL), line.amount_fen),
                    ],
                    order_ref=line.order_no,
                )
                log.warning(
                    "batch %s line %s: charged but order %s not payable", batch.batch_no, line.seq, line.order_no
                )
        else:
            failed = accounting.fail(db, line.order_no)
            if failed.refused is not None and failed.refused.reason is Reason.CONFLICT:
                # The bank says not debited, yet the order was paid: reported for review, never applied.
                mine.outcome = "conflict"
                imported.conflicts.append(line.order_no)
                log.warning("batch %s line %s: %s for a paid order", batch.batch_no, line.seq, line.code.value)
            else:
                mine.outcome = "failed"
                imported.failed[line.code.value] += 1
    batch.status, batch.result_sha256, batch.settled_at = "settled", digest, now
    db.flush()
    return imported
