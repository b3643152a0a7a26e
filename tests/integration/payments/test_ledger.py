"""The ledger on both backends: balanced, idempotent, append-only, checked."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from authsvc.cli import main
from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.ledger.check import check
from payments.ledger.models import LedgerEntry, LedgerPosting
from payments.ledger.service import (
    KeyReused,
    LedgerError,
    Line,
    balance,
    balances,
    credit,
    debit,
    entry_by_key,
    post,
)

PAID = [debit("clearing:wechatpay", 1000), credit("fund:pension:110000", 1000)]


def count(runtime: Runtime, model: type) -> int:
    with unit_of_work(runtime.sessions) as db:
        return db.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def test_posts_a_balanced_entry_and_reads_balances(runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as db:
        posted = post(db, "order:A:paid", "paid", PAID, order_ref="A")
        entry = entry_by_key(db, "order:A:paid")
        assert posted.new and entry is not None and entry.id == posted.id and entry.order_ref == "A"
        assert [(p.account.code, p.side, p.amount) for p in entry.postings] == [
            ("clearing:wechatpay", "debit", 1000),
            ("fund:pension:110000", "credit", 1000),
        ]
    with unit_of_work(runtime.sessions) as db:
        post(
            db,
            "refund:R:requested",
            "refund_requested",
            [debit("fund:pension:110000", 300), credit("refunds:wechatpay", 300)],
        )
        assert balance(db, "clearing:wechatpay") == 1000
        assert balances(db) == {"clearing:wechatpay": 1000, "fund:pension:110000": 700, "refunds:wechatpay": 300}
        assert balance(db, "suspense") == 0
        assert check(db).balanced  # (no orders here: test_ledger_agreement.py checks orders against entries)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "needs postings"),
        ([debit("clearing:wechatpay", 1000), credit("fund:pension:110000", 999)], "unbalanced"),
        ([debit("clearing:wechatpay", 0), credit("fund:pension:110000", 0)], "more than zero"),
        ([debit("clearing:wechatpay", -5), credit("fund:pension:110000", -5)], "negative"),
        ([debit("clearing:wechatpay", 1.5), credit("fund:pension:110000", 1.5)], "integer"),  # type: ignore[arg-type]
        ([debit("clearing:WeChat", 100), credit("fund:pension:110000", 100)], "account code"),
        ([debit("fund:pension:11", 100), credit("fund:pension:110000", 100)], "account code"),
        ([("clearing:wechatpay", "debit", 100)], "Line values"),
        ([Line("clearing:wechatpay", "debit", 100), credit("fund:pension:110000", 100)], "Line values"),  # type: ignore[arg-type]
    ],
)
def test_refuses_bad_postings_and_writes_nothing(runtime: Runtime, lines: list[Line], message: str) -> None:
    with pytest.raises(LedgerError, match=message), unit_of_work(runtime.sessions) as db:
        post(db, "order:B:paid", "paid", lines)
    assert count(runtime, LedgerEntry) == 0 and count(runtime, LedgerPosting) == 0


@pytest.mark.parametrize(("key", "kind"), [("", "paid"), ("k" * 129, "paid"), ("a\nb", "paid"), ("ok", "")])
def test_refuses_bad_keys_and_kinds(runtime: Runtime, key: str, kind: str) -> None:
    with pytest.raises(LedgerError), unit_of_work(runtime.sessions) as db:
        post(db, key, kind, PAID)


def test_the_same_key_posts_once(runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as db:
        first = post(db, "order:C:paid", "paid", PAID).id
    with unit_of_work(runtime.sessions) as db:
        # The same lines in another order are the same event: a retry.
        assert post(db, "order:C:paid", "paid", list(reversed(PAID))).id == first
    with pytest.raises(KeyReused), unit_of_work(runtime.sessions) as db:
        post(db, "order:C:paid", "paid", [debit("clearing:alipay", 1000), credit("fund:pension:110000", 1000)])
    with pytest.raises(KeyReused), unit_of_work(runtime.sessions) as db:
        post(db, "order:C:paid", "refund_requested", PAID)
    assert count(runtime, LedgerEntry) == 1 and count(runtime, LedgerPosting) == 2


def test_concurrent_posts_of_one_key_make_one_entry(runtime: Runtime, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers; the race is PostgreSQL's")
    barrier = threading.Barrier(2)
    ids: list[int] = []
    errors: list[BaseException] = []

    def poster() -> None:
        try:
            with unit_of_work(runtime.sessions) as db:
                db.execute(sa.text("SELECT 1"))  # both transactions open before either posts
                barrier.wait()
                ids.append(post(db, "order:D:paid", "paid", PAID).id)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=poster) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(ids) == 2 and ids[0] == ids[1]
    assert count(runtime, LedgerEntry) == 1 and count(runtime, LedgerPosting) == 2


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_postings SET amount = amount + 1",
        "DELETE FROM ledger_postings",
        "UPDATE ledger_entries SET kind = 'x'",
        "DELETE FROM ledger_entries",
    ],
)
def test_postgresql_refuses_changes_to_ledger_rows(runtime: Runtime, backend: str, statement: str) -> None:
    if backend != "postgresql":
        pytest.skip("the immutability trigger is PostgreSQL's")
    with unit_of_work(runtime.sessions) as db:
        post(db, "order:E:paid", "paid", PAID)
    with pytest.raises(DBAPIError, match="ledger rows are immutable"), runtime.engine.begin() as conn:
        conn.execute(sa.text(statement))
    with unit_of_work(runtime.sessions) as db:
        assert balance(db, "clearing:wechatpay") == 1000 and check(db).balanced


def test_check_finds_unbalanced_and_empty_entries(runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as db:
        post(db, "entry:F", "paid", PAID)  # not an order's key: there are no orders here
        # Rows written around post(), as a bug or a hand-made INSERT would: check() must see them.
        account_id = db.scalar(sa.select(LedgerPosting.account_id).limit(1))
        broken = LedgerEntry(key="broken", kind="paid", digest="0" * 64)
        empty = LedgerEntry(key="empty", kind="paid", digest="0" * 64)
        db.add_all([broken, empty])
        db.flush()
        db.add(LedgerPosting(entry_id=broken.id, account_id=account_id, side="debit", amount=5))
        db.flush()
        report = check(db).as_dict()
    assert report["ok"] is False
    assert report["total_debits_fen"] == 1005 and report["total_credits_fen"] == 1000
    assert report["unbalanced_entries"] == 1 and report["empty_entries"] == 1
    assert report["examples"] == ["unbalanced: broken", "no postings: empty"]


def test_check_ledger_command(cli_env: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    with unit_of_work(cli_env.sessions) as db:
        post(db, "entry:G", "paid", PAID)  # not an order's key: there are no orders here
    assert main(["payments", "check-ledger"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["entries"] == 1 and report["total_debits_fen"] == 1000
    with unit_of_work(cli_env.sessions) as db:
        db.add(LedgerEntry(key="empty", kind="paid", digest="0" * 64))
    assert main(["payments", "check-ledger"]) == 1
    assert json.loads(capsys.readouterr().out)["empty_entries"] == 1
