"""Batch withholding on both backends: agreements, export of the waiting orders into a signed debit file, the bank
sandbox debiting real balances, the result file verified against its batch and applied through the order
accounting (idempotent, refused whole when anything is off), the withholding adapter, and the CLI."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from authsvc import cli
from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from keys import channel_keys
from payments.channels import bank
from payments.channels.base import ChannelDeclined, CloseResult, TradeStatus
from payments.ledger.models import LedgerEntry
from payments.orders import accounting
from payments.withholding import batches, files
from payments.withholding.agreements import AgreementError, add_agreement, require_agreement, revoke_agreement
from payments.withholding.models import WithholdingBatch, WithholdingLine
from payments.withholding.results import ResultRefused, import_result
from tests.integration.payments.support import AMOUNT, SSN, ledger, new_order
from tests.integration.payments.test_bank_channel import (
    MERCHANT,
    OUR_KEY,
    Bank,
    order_state,
    service,  # noqa: F401 - the fixture
)

WHEN = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
OTHER_SSN = "330106198511124520"


def agree(runtime: Runtime, env: Bank, agreement_no: str, payer: str, *, balance: int = 10**6, ssn: str = SSN) -> None:
    with unit_of_work(runtime.sessions) as db:
        add_agreement(
            db,
            agreement_no=agreement_no,
            payer_kind="citizen",
            payer=payer,
            insured_ssn=ssn,
            account_token=f"tok-{agreement_no}-0001",
            account_masked="622202******1234",
            signed_at=WHEN,
        )
    env.sandbox.open_account(f"acct-{agreement_no}", balance)
    env.sandbox.add_agreement(agreement_no, f"acct-{agreement_no}")


def export(runtime: Runtime) -> batches.Exported:
    with unit_of_work(runtime.sessions) as db:
        return batches.export(db, merchant=MERCHANT, key=OUR_KEY, now=WHEN)


def apply(runtime: Runtime, env: Bank, data: bytes, signature: bytes) -> dict[str, object]:
    keys = bank.KeyRing.of((env.sandbox.bank_key.key_id, env.sandbox.bank_key.public_pem()))
    with unit_of_work(runtime.sessions) as db:
        return import_result(db, data, signature, merchant=MERCHANT, bank_keys=keys, now=WHEN).report()


def entries(runtime: Runtime) -> int:
    with unit_of_work(runtime.sessions) as db:
        return db.scalar(select(func.count()).select_from(LedgerEntry)) or 0


def outcomes(runtime: Runtime) -> list[tuple[str, str | None, str | None]]:
    with unit_of_work(runtime.sessions) as db:
        rows = db.scalars(select(WithholdingLine).order_by(WithholdingLine.seq)).all()
        return [(row.order_no, row.result_code, row.outcome) for row in rows]


# --- agreements --------------------------------------------------------------------------------------------------


def test_agreements(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    with unit_of_work(runtime.sessions) as db, pytest.raises(AgreementError, match="no active withholding") as none:
        require_agreement(db, "citizen", "alice", SSN)
    assert SSN not in str(none.value)  # refusals never quote the SSN
    agree(runtime, service, "AG1", "alice")
    with unit_of_work(runtime.sessions) as db:
        assert require_agreement(db, "citizen", "alice", SSN).agreement_no == "AG1"
        with pytest.raises(AgreementError):
            require_agreement(db, "citizen", "alice", OTHER_SSN)  # it covers one insured person
        with pytest.raises(AgreementError):
            require_agreement(db, "agent", "alice", SSN)
        assert SSN not in repr(require_agreement(db, "citizen", "alice", SSN))
    with pytest.raises(AgreementError, match="already has an active"):
        agree(runtime, service, "AG2", "alice")
    with pytest.raises(AgreementError, match="already recorded"):
        agree(runtime, service, "AG1", "bob")
    with unit_of_work(runtime.sessions) as db:
        assert revoke_agreement(db, "AG1", now=WHEN).status == "revoked"
    with unit_of_work(runtime.sessions) as db:
        with pytest.raises(AgreementError, match="already revoked"):
            revoke_agreement(db, "AG1", now=WHEN)
        with pytest.raises(AgreementError, match="no agreement"):
            revoke_agreement(db, "AG9", now=WHEN)
        with pytest.raises(AgreementError):
            require_agreement(db, "citizen", "alice", SSN)
    agree(runtime, service, "AG2", "alice")  # a new account after the old agreement was revoked


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("account_masked", "6222021234561234"),  # a full account number is never stored
        ("account_token", "short"),
        ("agreement_no", "AG|1"),
        ("payer_kind", "bank"),
        ("insured_ssn", "123"),
        ("insured_ssn", "110105199003072814"),  # a typo (wrong check character): no order could ever match it
        ("insured_ssn", "ABCDEFGHIJKLMNOPQR"),
    ],
)
def test_agreement_input_refused(runtime: Runtime, service: Bank, field: str, value: str) -> None:  # noqa: F811
    args = dict(
        agreement_no="AG1",
        payer_kind="citizen",
        payer="alice",
        insured_ssn=SSN,
        account_token="tok-000000001",
        account_masked="622202******1234",
        signed_at=WHEN,
    )
    with unit_of_work(runtime.sessions) as db, pytest.raises(AgreementError):
        add_agreement(db, **(args | {field: value}))  # type: ignore[arg-type]


# --- export and import ---------------------------------------------------------------------------------------------


def test_batch_round_trip(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    agree(runtime, service, "AG1", "alice")
    agree(runtime, service, "AG2", "bob", balance=AMOUNT - 1)  # insufficient funds at the bank
    agree(runtime, service, "AG3", "carol")
    agree(runtime, service, "AG4", "dave")
    paid = new_order(runtime, "withholding", submit=False, payer="alice")
    poor = new_order(runtime, "withholding", submit=False, payer="bob")
    revoked_at_bank = new_order(runtime, "withholding", submit=False, payer="carol")
    revoked_here = new_order(runtime, "withholding", submit=False, payer="dave")
    closed = new_order(runtime, "withholding", submit=False, payer="alice")
    other_channel = new_order(runtime, "bank", submit=False, payer="alice")
    service.sandbox.revoke_agreement("AG3")  # the payer revoked at the bank; we have not heard yet
    with unit_of_work(runtime.sessions) as db:
        revoke_agreement(db, "AG4", now=WHEN)
        accounting.close(db, closed)

    exported = export(runtime)
    assert exported.failed_no_agreement == [revoked_here] and order_state(runtime, revoked_here) == "failed"
    assert (exported.count, exported.total_fen) == (3, 3 * AMOUNT)
    assert (
        exported.data
        == (
            f"WHDEBIT|1|{MERCHANT}|{exported.batch_no}|20261128T020000Z|3|{3 * AMOUNT}\n"
            f"D|1|{paid}|AG1|{AMOUNT}\nD|2|{poor}|AG2|{AMOUNT}\nD|3|{revoked_at_bank}|AG3|{AMOUNT}\n"
            f"END|3|{3 * AMOUNT}\n"
        ).encode()
    )
    bank.verify_file(
        bank.KeyRing.of((OUR_KEY.key_id, OUR_KEY.public_pem())), files.DEBIT, exported.data, exported.signature
    )
    assert [order_state(runtime, o) for o in (paid, poor, revoked_at_bank)] == ["pending"] * 3
    assert (order_state(runtime, closed), order_state(runtime, other_channel)) == ("closed", "created")
    assert export(runtime).batch_no is None  # nothing waits any more

    balance = service.sandbox.accounts["acct-AG1"].balance_fen
    data, signature = service.sandbox.result_file(exported.data, exported.signature)
    assert service.sandbox.accounts["acct-AG1"].balance_fen == balance - AMOUNT
    report = apply(runtime, service, data, signature)
    assert report == {
        "batch_no": exported.batch_no,
        "already_imported": False,
        "paid": 1,
        "paid_fen": AMOUNT,
        "failed": {"INSUFFICIENT_FUNDS": 1, "AGREEMENT_REVOKED": 1},
        "held": [],
        "conflicts": [],
    }
    assert [order_state(runtime, o) for o in (paid, poor, revoked_at_bank)] == ["paid", "failed", "failed"]
    assert ledger(runtime) == {"clearing:withholding": AMOUNT, "fund:pension:110000": AMOUNT}
    assert outcomes(runtime) == [
        (paid, "SUCCESS", "paid"),
        (poor, "INSUFFICIENT_FUNDS", "failed"),
        (revoked_at_bank, "AGREEMENT_REVOKED", "failed"),
    ]
    count = entries(runtime)
    again = apply(runtime, service, data, signature)  # the same file twice changes nothing
    assert again["already_imported"] is True and again["paid"] == 0
    assert entries(runtime) == count and ledger(runtime) == {
        "clearing:withholding": AMOUNT,
        "fund:pension:110000": AMOUNT,
    }


def _batch(runtime: Runtime, env: Bank, n: int = 2) -> batches.Exported:
    for i in range(n):
        agree(runtime, env, f"AG{i}", f"payer{i}")
        new_order(runtime, "withholding", submit=False, payer=f"payer{i}")
    return export(runtime)


def _assert_untouched(runtime: Runtime, exported: batches.Exported) -> None:
    assert ledger(runtime) == {}
    assert {o for o, _, outcome in outcomes(runtime) if outcome is None} == {
        line.split("|")[2] for line in exported.data.decode().splitlines()[1:-1]
    }
    with unit_of_work(runtime.sessions) as db:
        batch = batches.batch_by_no(db, exported.batch_no or "")
        assert batch is not None and batch.status == "exported" and batch.result_sha256 is None


def test_a_tampered_result_file_is_refused_whole(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    exported = _batch(runtime, service)
    service.sandbox.faults.result_tamper = True
    data, signature = service.sandbox.result_file(exported.data, exported.signature)
    with pytest.raises(ResultRefused) as info:
        apply(runtime, service, data, signature)
    assert info.value.reason == "signature"
    _assert_untouched(runtime, exported)


def _signed(env: Bank, result: files.ResultFile) -> tuple[bytes, bytes]:
    data = files.write_result(result)
    return data, bank.sign_file(env.sandbox.bank_key, files.RESULT, data)


@pytest.mark.parametrize("change", ["unknown_batch", "amount", "other_order", "missing_line", "merchant", "malformed"])
def test_signed_results_that_disagree_with_the_batch(runtime: Runtime, service: Bank, change: str) -> None:  # noqa: F811
    """Files the bank signed but that are not this batch's answer: refused whole, nothing applied."""
    exported = _batch(runtime, service)
    good = files.parse_result(service.sandbox.result_file(exported.data, exported.signature)[0])
    first, second = good.lines
    if change == "unknown_batch":
        bad, reason = files.ResultFile(MERCHANT, "WH20261128NOTOURS", good.lines), "unknown_batch"
    elif change == "amount":
        moved = (
            files.ResultLine(1, first.order_no, first.amount_fen - 1, first.code, first.bank_trade_no),
            files.ResultLine(2, second.order_no, second.amount_fen + 1, second.code, second.bank_trade_no),
        )
        bad, reason = files.ResultFile(MERCHANT, good.batch_no, moved), "mismatch"
    elif change == "other_order":
        swapped = (files.ResultLine(1, "P00000000000000000000000000OTHER", first.amount_fen, first.code, "BT1"), second)
        bad, reason = files.ResultFile(MERCHANT, good.batch_no, swapped), "mismatch"
    elif change == "missing_line":
        bad, reason = files.ResultFile(MERCHANT, good.batch_no, (first,)), "mismatch"
    elif change == "merchant":
        bad, reason = files.ResultFile("M999999", good.batch_no, good.lines), "merchant"
    else:
        data, _ = _signed(service, good)
        data = data.replace(b"END|", b"END|9|")
        bad, reason = None, "malformed"
    if bad is not None:
        data, signature = _signed(service, bad)
    else:
        signature = bank.sign_file(service.sandbox.bank_key, files.RESULT, data)
    with pytest.raises(ResultRefused) as info:
        apply(runtime, service, data, signature)
    assert info.value.reason == reason
    _assert_untouched(runtime, exported)


def test_a_second_different_result_for_a_settled_batch_is_refused(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    exported = _batch(runtime, service)
    data, signature = service.sandbox.result_file(exported.data, exported.signature)
    apply(runtime, service, data, signature)
    good = files.parse_result(data)
    other = files.ResultFile(
        MERCHANT,
        good.batch_no,
        tuple(
            files.ResultLine(li.seq, li.order_no, li.amount_fen, files.ResultCode.DEBIT_REFUSED, "")
            for li in good.lines
        ),
    )
    with pytest.raises(ResultRefused) as info:
        apply(runtime, service, *_signed(service, other))
    assert info.value.reason == "conflicting_result"
    assert ledger(runtime) == {"clearing:withholding": 2 * AMOUNT, "fund:pension:110000": 2 * AMOUNT}


def test_a_debit_on_an_order_closed_meanwhile_is_held(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    exported = _batch(runtime, service, 1)
    order_no = outcomes(runtime)[0][0]
    with unit_of_work(runtime.sessions) as db:
        accounting.close(db, order_no)  # someone closed the pending order while the bank debited it
    report = apply(runtime, service, *service.sandbox.result_file(exported.data, exported.signature))
    assert report["held"] == [order_no] and report["paid"] == 0
    assert order_state(runtime, order_no) == "closed"
    assert ledger(runtime) == {"clearing:withholding": AMOUNT, "suspense:withholding": AMOUNT}
    assert outcomes(runtime) == [(order_no, "SUCCESS", "held")]


def test_orders_settled_before_the_result_file(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    """A debit already seen paid by a query is not posted twice; a 'not debited' for an order paid meanwhile is a
    conflict for review, never applied."""
    agree(runtime, service, "AG1", "alice")
    agree(runtime, service, "AG2", "bob", balance=1)
    seen_paid = new_order(runtime, "withholding", submit=False, payer="alice")
    paid_elsewhere = new_order(runtime, "withholding", submit=False, payer="bob")
    exported = export(runtime)
    data, signature = service.sandbox.result_file(exported.data, exported.signature)
    with unit_of_work(runtime.sessions) as db:
        accounting.mark_paid(db, seen_paid, amount_fen=AMOUNT)  # the recovery job's query found it debited
        accounting.mark_paid(db, paid_elsewhere, amount_fen=AMOUNT)  # however it happened: it is paid
    report = apply(runtime, service, data, signature)
    assert (report["paid"], report["failed"], report["held"]) == (1, {}, [])
    assert report["conflicts"] == [paid_elsewhere]
    assert (order_state(runtime, seen_paid), order_state(runtime, paid_elsewhere)) == ("paid", "paid")
    assert ledger(runtime) == {"clearing:withholding": 2 * AMOUNT, "fund:pension:110000": 2 * AMOUNT}
    assert [outcome for _, _, outcome in outcomes(runtime)] == ["paid", "conflict"]


def test_concurrent_exports_put_each_order_in_one_batch(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    for i in range(6):
        agree(runtime, service, f"AG{i}", f"payer{i}")
        new_order(runtime, "withholding", submit=False, payer=f"payer{i}")
    barrier = threading.Barrier(2)
    results: list[batches.Exported | BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(export(runtime))
        except BaseException as exc:  # the loser's failure, if any, is checked below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    exported = [r for r in results if isinstance(r, batches.Exported)]
    # A loser may fail on the database (SQLite's single writer) and roll back whole; it never doubles an order.
    assert exported and sum(e.count for e in exported) == 6
    lines = outcomes(runtime)
    assert len(lines) == 6 and len({order_no for order_no, _, _ in lines}) == 6
    with unit_of_work(runtime.sessions) as db:
        assert db.scalar(select(func.sum(WithholdingBatch.line_count))) == 6


def test_a_lost_debit_file_is_written_again_byte_for_byte(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    exported = _batch(runtime, service)
    with unit_of_work(runtime.sessions) as db:
        data, signature = batches.debit_file(db, exported.batch_no or "", merchant=MERCHANT, key=OUR_KEY)
        assert data == exported.data
        with pytest.raises(LookupError):
            batches.debit_file(db, "WHNOPE", merchant=MERCHANT, key=OUR_KEY)
    service.sandbox.result_file(data, signature)  # the bank accepts it


# --- the withholding adapter ---------------------------------------------------------------------------------------


def test_withholding_adapter_query_and_close(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    adapter = service.withholding
    agree(runtime, service, "AG1", "alice")
    waiting = new_order(runtime, "withholding", submit=False, payer="alice")
    start = adapter.create_payment(service.order_ref(waiting, "withholding", payer_ref="AG1"))
    assert (start.method, dict(start.data)) == ("withholding", {"agreement_no": "AG1"})
    assert adapter.query_payment(waiting).status is TradeStatus.NOT_FOUND
    assert adapter.close_payment(waiting) is CloseResult.CLOSED  # not exported: out of the next batch

    exported = export(runtime)
    with pytest.raises(ChannelDeclined) as sent:
        adapter.close_payment(waiting)  # exported, not yet at the bank: the bank would still debit it
    assert sent.value.code == "IN_BATCH"
    service.sandbox.receive_debit_file(exported.data, exported.signature)
    assert adapter.query_payment(waiting).status is TradeStatus.PAYING
    with pytest.raises(ChannelDeclined):
        adapter.close_payment(waiting)
    apply(runtime, service, *service.sandbox.result_file(exported.data, exported.signature))
    trade = adapter.query_payment(waiting)
    assert (trade.status, trade.amount_fen) == (TradeStatus.PAID, AMOUNT) and trade.paid_at is not None
    assert adapter.close_payment(waiting) is CloseResult.ALREADY_PAID


def test_withholding_adapter_close_after_a_failed_debit(runtime: Runtime, service: Bank) -> None:  # noqa: F811
    agree(runtime, service, "AG1", "alice", balance=1)
    order_no = new_order(runtime, "withholding", submit=False, payer="alice")
    exported = export(runtime)
    apply(runtime, service, *service.sandbox.result_file(exported.data, exported.signature))
    assert service.withholding.query_payment(order_no).status is TradeStatus.FAILED
    assert service.withholding.close_payment(order_no) is CloseResult.CLOSED


# --- the CLI ---------------------------------------------------------------------------------------------------------


def import_bank_keys(runtime: Runtime, env: Bank) -> None:
    """What the CLI signs and verifies with: our signing key and the sandbox bank's public key, in keys/."""
    pem = OUR_KEY.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with unit_of_work(runtime.sessions) as db:
        channel_keys.import_key(db, runtime.sealer, channel="bank", kind="signing-key", data=pem, serial="sscard-1")
        channel_keys.import_key(
            db,
            runtime.sealer,
            channel="bank",
            kind="bank-public-key",
            data=env.sandbox.bank_key.public_pem(),
            serial=env.sandbox.bank_key.key_id,
        )


def test_cli(cli_env: Runtime, service: Bank, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:  # noqa: F811
    runtime = cli_env
    monkeypatch.setenv("SSCARD_BANK_MERCHANT_ID", MERCHANT)
    out = tmp_path / "debit.txt"
    assert cli.main(["payments", "withholding", "export", "--out", str(out)]) == 1
    assert "no active bank signing-key" in capsys.readouterr().err
    import_bank_keys(runtime, service)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(["payments", "withholding", *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    add = ["agreement-add", "--agreement-no", "AG1", "--payer-kind", "citizen", "--payer", "alice"]
    add += ["--insured-ssn", SSN, "--account-token", "tok-AG1-0001", "--account-masked", "622202******1234"]
    code, stdout, _ = run(*add)
    assert code == 0 and json.loads(stdout) == {
        "agreement_no": "AG1",
        "status": "active",
        "insured_ssn_masked": json.loads(stdout)["insured_ssn_masked"],
        "account_masked": "622202******1234",
    }
    assert SSN not in stdout
    code, _, err = run(*add)
    assert code == 1 and "already" in err
    service.sandbox.open_account("acct-AG1", 10**6)
    service.sandbox.add_agreement("AG1", "acct-AG1")
    order_no = new_order(runtime, "withholding", submit=False, payer="alice")

    code, stdout, _ = run("export", "--out", str(out))
    report = json.loads(stdout)
    assert code == 0 and report["count"] == 1 and report["total_fen"] == AMOUNT
    assert out.read_bytes().startswith(b"WHDEBIT|1|") and Path(f"{out}.sig").read_bytes().startswith(b"BANKSIG|1|")
    code, _, err = run("export", "--out", str(out))
    assert code == 1 and "never overwritten" in err

    result = tmp_path / "result.txt"
    data, signature = service.sandbox.result_file(out.read_bytes(), Path(f"{out}.sig").read_bytes())
    result.write_bytes(data)
    Path(f"{result}.sig").write_bytes(signature)
    code, stdout, _ = run("import-result", str(result))
    assert code == 0 and json.loads(stdout)["paid"] == 1
    assert order_state(runtime, order_no) == "paid"
    code, stdout, _ = run("import-result", str(result))
    assert code == 0 and json.loads(stdout)["already_imported"] is True

    tampered = tmp_path / "tampered.txt"
    tampered.write_bytes(data.replace(b"SUCCESS", b"DEBIT_REFUSED"))
    code, _, err = run("import-result", str(tampered), "--signature", f"{result}.sig")
    assert code == 1 and "nothing applied" in err
    code, _, err = run("import-result", str(tmp_path / "missing.txt"))
    assert code == 1 and "cannot read" in err

    code, stdout, _ = run("agreement-revoke", "AG1")
    assert code == 0 and json.loads(stdout)["status"] == "revoked"
    code, _, err = run("agreement-revoke", "AG1")
    assert code == 1 and "already revoked" in err
    with unit_of_work(runtime.sessions) as db:
        assert db.scalar(select(func.count()).select_from(WithholdingBatch)) == 1


def test_cli_export_to_a_missing_directory_exports_nothing(
    cli_env: Runtime,
    service: Bank,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A debit file that cannot be written is refused before the batch is made: the orders stay waiting for the
    next export, instead of being packed into a batch whose file the operator never got (and a traceback)."""
    runtime = cli_env
    monkeypatch.setenv("SSCARD_BANK_MERCHANT_ID", MERCHANT)
    import_bank_keys(runtime, service)
    agree(runtime, service, "AG1", "alice")
    order_no = new_order(runtime, "withholding", submit=False, payer="alice")
    out = tmp_path / "no-such-directory" / "debit.txt"
    for command in (["export"], ["debit-file", "WH0"]):
        assert cli.main(["payments", "withholding", *command, "--out", str(out)]) == 1
        assert "no-such-directory" in capsys.readouterr().err
    assert order_state(runtime, order_no) == "created"
    with unit_of_work(runtime.sessions) as db:
        assert db.scalar(select(func.count()).select_from(WithholdingBatch)) == 0
