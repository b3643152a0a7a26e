"""`authsvc payments withholding ...`: agreements, batch export and result import for operators and cron.

authsvc/cli.py registers these parsers (`add_parsers`) and runs `run(args, admin)` with its administration unit of
work. Keys come from keys/ (`authsvc channel-keys`, channel "bank": our active signing-key, the bank's public keys)
and the merchant id from SSCARD_BANK_MERCHANT_ID. Every command prints JSON; refusals go to stderr with exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

Admin = Callable[[], AbstractContextManager[tuple[Any, Any]]]


class CommandRefused(Exception):
    pass


def add_parsers(pay: argparse._SubParsersAction, add: Callable[..., argparse.ArgumentParser], handler: Any) -> None:
    wh = pay.add_parser("withholding", help="bank batch withholding (代扣)").add_subparsers(dest="wh", required=True)
    p = add(wh, "agreement-add", handler, "record a withholding agreement the bank confirmed")
    p.add_argument("--agreement-no", required=True, help="the bank's agreement number")
    p.add_argument("--payer-kind", required=True, choices=["citizen", "agent", "employer"])
    p.add_argument("--payer", required=True, help="the payer (token subject or employer client id)")
    p.add_argument("--insured-ssn", required=True, help="the insured person whose contributions it covers")
    p.add_argument("--account-token", required=True, help="the bank's token for the account")
    p.add_argument("--account-masked", required=True, help="the masked account number, e.g. 622202******1234")
    p = add(wh, "agreement-revoke", handler, "revoke an agreement: its orders are no longer debited")
    p.add_argument("agreement_no")
    p = add(wh, "export", handler, "pack waiting withholding orders into a signed debit file (FILE and FILE.sig)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE")
    p = add(wh, "debit-file", handler, "write an exported batch's debit file again (a lost file)")
    p.add_argument("batch_no")
    p.add_argument("--out", required=True, type=Path, metavar="FILE")
    p = add(wh, "import-result", handler, "verify the bank's result file against its batch and apply it")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--signature", type=Path, metavar="SIG", help="the detached signature (default FILE.sig)")


def run(args: argparse.Namespace, admin: Admin) -> int:
    try:
        report = _COMMANDS[args.wh](args, admin)
    except CommandRefused as exc:
        print(f"authsvc: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


def _keys(runtime: Any, session: Any) -> tuple[str, Any, Any]:
    from keys.channel_keys import material
    from payments.channels import bank

    merchant = runtime.settings.bank_merchant_id
    if not merchant:
        raise CommandRefused("SSCARD_BANK_MERCHANT_ID is not set")
    found = material(session, runtime.sealer, "bank")
    if found.signer is None or found.signer.serial is None or not found.verify_keys:
        raise CommandRefused("no active bank signing-key or no bank-public-key in keys (authsvc channel-keys)")
    key = bank.SigningKey(found.signer.serial, found.signer.private_key)
    return merchant, key, bank.KeyRing(dict(found.verify_keys))


def _agreement_add(args: argparse.Namespace, admin: Admin) -> dict[str, Any]:
    from authsvc.database import utcnow
    from authsvc.registry.masking import mask_ssn
    from payments.withholding.agreements import AgreementError, add_agreement

    try:
        with admin() as (_, session):
            agreement = add_agreement(
                session,
                agreement_no=args.agreement_no,
                payer_kind=args.payer_kind,
                payer=args.payer,
                insured_ssn=args.insured_ssn.upper(),
                account_token=args.account_token,
                account_masked=args.account_masked,
                signed_at=utcnow(),
            )
            return {
                "agreement_no": agreement.agreement_no,
                "status": agreement.status,
                "insured_ssn_masked": mask_ssn(agreement.insured_ssn),
                "account_masked": agreement.account_masked,
            }
    except AgreementError as exc:
        raise CommandRefused(str(exc)) from None


def _agreement_revoke(args: argparse.Namespace, admin: Admin) -> dict[str, Any]:
    from authsvc.database import utcnow
    from payments.withholding.agreements import AgreementError, revoke_agreement

    try:
        with admin() as (_, session):
            agreement = revoke_agreement(session, args.agreement_no, now=utcnow())
            return {"agreement_no": agreement.agreement_no, "status": agreement.status}
    except AgreementError as exc:
        raise CommandRefused(str(exc)) from None


def _check_out(out: Path) -> None:
    """Checked before anything is exported: a debit file (and its .sig) is never overwritten, and it can be written
    where asked (a batch committed without its file would hold its orders until `debit-file`)."""
    for path in (out, Path(f"{out}.sig")):
        if path.exists():
            raise CommandRefused(f"{path} exists: a debit file is never overwritten")
    if not out.parent.is_dir():
        raise CommandRefused(f"{out.parent} is not a directory")


def _write(out: Path, data: bytes, signature: bytes, batch_no: str) -> None:
    try:
        out.write_bytes(data)
        Path(f"{out}.sig").write_bytes(signature)
    except OSError as exc:
        raise CommandRefused(
            f"batch {batch_no} is exported but {exc.filename} could not be written ({exc.strerror}): "
            "write it with debit-file"
        ) from None


def _export(args: argparse.Namespace, admin: Admin) -> dict[str, Any]:
    from authsvc.database import utcnow
    from payments.withholding.batches import export

    _check_out(args.out)
    with admin() as (runtime, session):
        merchant, key, _ = _keys(runtime, session)
        exported = export(session, merchant=merchant, key=key, now=utcnow())
    # Written after the commit: a file is only ever sent for a batch the database holds (batches.py).
    if exported.batch_no is not None:
        _write(args.out, exported.data, exported.signature, exported.batch_no)
    return exported.report() | {"file": str(args.out) if exported.batch_no else None}


def _debit_file(args: argparse.Namespace, admin: Admin) -> dict[str, Any]:
    from payments.withholding.batches import debit_file

    _check_out(args.out)
    with admin() as (runtime, session):
        merchant, key, _ = _keys(runtime, session)
        try:
            data, signature = debit_file(session, args.batch_no, merchant=merchant, key=key)
        except LookupError as exc:
            raise CommandRefused(str(exc)) from None
    _write(args.out, data, signature, args.batch_no)
    return {"batch_no": args.batch_no, "file": str(args.out)}


def _import_result(args: argparse.Namespace, admin: Admin) -> dict[str, Any]:
    from authsvc.database import utcnow
    from payments.withholding.results import ResultRefused, import_result

    sig_path = args.signature or Path(f"{args.file}.sig")
    try:
        data, signature = args.file.read_bytes(), sig_path.read_bytes()
    except OSError as exc:
        raise CommandRefused(f"cannot read {exc.filename}: {exc.strerror}") from None
    try:
        with admin() as (runtime, session):
            merchant, _, bank_keys = _keys(runtime, session)
            return import_result(
                session, data, signature, merchant=merchant, bank_keys=bank_keys, now=utcnow()
            ).report()
    except ResultRefused as exc:
        raise CommandRefused(f"result file refused, nothing applied: {exc}") from None


_COMMANDS: dict[str, Callable[[argparse.Namespace, Admin], dict[str, Any]]] = {
    "agreement-add": _agreement_add,
    "agreement-revoke": _agreement_revoke,
    "export": _export,
    "debit-file": _debit_file,
    "import-result": _import_result,
}
