"""`authsvc`: run the service and administer it (database, registry, cards, kiosks, keys, demo)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from authsvc.config import ConfigError, Settings, load_settings
from authsvc.database import unit_of_work
from authsvc.registry.masking import mask_card_number, mask_ssn
from authsvc.registry.service import RegistryError
from authsvc.runtime import Runtime


class CommandError(Exception):
    pass


def _runtime() -> Runtime:
    return Runtime(load_settings())


@contextmanager
def _admin() -> Iterator[tuple[Runtime, Session]]:
    """An administration command's runtime and its one unit of work, on a database at the current schema."""
    runtime = _runtime()
    prepare(runtime, migrate=False)
    try:
        with unit_of_work(runtime.sessions) as session:
            yield runtime, session
    finally:
        runtime.close()


def prepare(runtime: Runtime, *, migrate: bool) -> None:
    """Bring the database to the code's schema (or insist that it is) and make sure signing keys exist."""
    from authsvc import migrate as migrations
    from keys import hmac_keys, signing

    if migrations.pending(runtime.engine):
        if not migrate:
            raise CommandError("the database schema is behind this version: run `authsvc db upgrade` first")
        migrations.upgrade(runtime.engine)
    with unit_of_work(runtime.sessions) as session:
        signing.ensure(session, runtime.sealer)
        for label in hmac_keys.LABELS:
            hmac_keys.ensure_key(session, runtime.sealer, label)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    runtime = _runtime()
    prepare(runtime, migrate=runtime.settings.embedded)
    if runtime.settings.embedded and args.workers > 1:
        raise CommandError(
            "the embedded default (SQLite, in-process store) runs one worker; "
            "configure SSCARD_DATABASE_URL and SSCARD_REDIS_URL for more"
        )
    runtime.close()
    uvicorn.run(
        "authsvc.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=args.proxy_headers,
    )
    return 0


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from authsvc import migrate as migrations

    runtime = _runtime()
    migrations.upgrade(runtime.engine)
    print("database is at the latest schema")
    return 0


def cmd_cardholder_add(args: argparse.Namespace) -> int:
    from authsvc.registry import service

    with _admin() as (_, session):
        holder = service.add_cardholder(session, ssn=args.ssn, name=args.name, sex=args.sex, region_code=args.region)
        print(f"added cardholder {mask_ssn(holder.ssn)} subject={holder.subject}")
    return 0


def cmd_cardholder_import(args: argparse.Namespace) -> int:
    from authsvc.registry import service

    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {args.file}: {exc}") from exc
    with _admin() as (_, session):
        report = service.import_csv(session, text)
    for line, message in report.errors:
        print(f"{args.file}:{line}: {message}", file=sys.stderr)
    print(f"added {report.added} cardholder(s), {len(report.errors)} row(s) refused")
    return 1 if report.errors else 0


def cmd_card_issue(args: argparse.Namespace) -> int:
    from authsvc.registry import service

    out = Path(args.out)
    with _admin() as (runtime, session):
        issued = service.issue_card(
            session,
            runtime.sealer,
            ssn=args.ssn,
            generation=args.generation,
            pin=args.pin,
            out=out,
            algorithm=args.algorithm,
        )
    print(f"issued generation-{issued.generation} card {issued.card_number} → {out}")
    return 0


def cmd_card_set_status(args: argparse.Namespace) -> int:
    from authsvc.ecard import repository as ecards
    from authsvc.registry import service

    with _admin() as (runtime, session):
        card, ended = service.change_card_status(session, runtime, args.card_number, args.status)
        print(f"card {mask_card_number(card.card_number)} is now {card.status}")
        if ended:
            print(f"its holder is signed out everywhere: {ended} SSO session(s) ended, their portals told")
        enrolled = [e for e in ecards.of_holder(session, card.cardholder_id) if e.card_id == card.id]
        if enrolled:  # a lost or cancelled card takes its e-cards along: say so, the operator tells the citizen
            counts = Counter(f"{e.status}" + (f" ({e.revoked_reason})" if e.revoked_reason else "") for e in enrolled)
            print("e-cards enrolled with it: " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items())))
    return 0


def cmd_terminal_add(args: argparse.Namespace) -> int:
    from authsvc.registry import service

    out = Path(args.out)
    with _admin() as (_, session):
        service.add_terminal(session, terminal_id=args.id, region_code=args.region, out=out, service=args.service)
    print(f"registered terminal {args.id}; its credential is in {out} (keep it private)")
    return 0


def cmd_terminal_set_status(args: argparse.Namespace) -> int:
    from authsvc.registry import service

    with _admin() as (_, session):
        row = service.set_terminal_status(session, args.id, args.status)
        print(f"terminal {row.id} is now {row.status}")
    return 0


def cmd_keys_init(_args: argparse.Namespace) -> int:
    with _admin():
        pass
    print("signing keys are in place")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from authsvc.audit import service as audit
    from authsvc.oidc.discovery import JWKS_MAX_AGE
    from keys import signing

    with _admin() as (runtime, session):
        s: Settings = runtime.settings
        # A retired key stays published while any token it signed may be alive, plus the time a worker may still
        # sign with its cached copy, plus the time a relying party may cache the key set.
        retire_for = timedelta(seconds=s.max_token_ttl + s.key_cache_seconds + JWKS_MAX_AGE)
        min_age = timedelta(0) if args.force else timedelta(seconds=JWKS_MAX_AGE + s.key_cache_seconds)
        try:
            active, nxt = signing.rotate(session, runtime.sealer, retire_for=retire_for, min_next_age=min_age)
        except signing.RotationRefused as exc:
            raise CommandError(str(exc)) from exc
        audit.record(
            session,
            event="signing_key_rotated",
            outcome="success",
            detail={"active": active, "next": nxt, "forced": bool(args.force)},
        )
    print(f"active signing key {active}; next key {nxt} published")
    return 0


def cmd_keys_list(_args: argparse.Namespace) -> int:
    from keys import repository
    from keys.models import Purpose

    with _admin() as (_, session):
        rows = [
            {
                "kid": r.kid,
                "purpose": r.purpose,
                "algorithm": r.algorithm,
                "state": r.state,
                "label": r.label,
                "created_at": r.created_at.isoformat(),
                "publish_until": r.publish_until.isoformat() if r.publish_until else None,
            }
            for purpose in Purpose
            for r in repository.by_purpose(session, purpose)
        ]
    print(json.dumps(rows, indent=2))
    return 0


def cmd_logout_deliver(_args: argparse.Namespace) -> int:
    from authsvc.oidc.backchannel import deliver_due

    with _admin() as (runtime, _):
        report = deliver_due(runtime)
    print(f"back-channel logout: {report.delivered} delivered, {report.retrying} to retry, {report.failed} given up")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from authsvc.database import utcnow
    from authsvc.maintenance import purge

    with _admin() as (_, session):
        report = purge(session, now=utcnow(), keep=timedelta(days=args.keep_days), batch=args.batch)
    print(json.dumps(report.counts()))
    return 0


def cmd_payments_review(args: argparse.Namespace) -> int:
    from payments.callbacks.review import pending_review

    with _admin() as (_, session):
        report = pending_review(session, channel=args.channel, limit=args.limit)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    # Exit 1 while anything waits for a person, so that monitoring keeps asking until it is resolved.
    return 1 if report["totals"] else 0


def cmd_payments_refunds(args: argparse.Namespace) -> int:
    from payments.refunds import service as refunds

    with _admin() as (_, session):
        found = refunds.find(session, order_no=args.order, state=args.state, limit=args.limit)
        print(json.dumps({"refunds": [refunds.describe(r) for r in found]}, ensure_ascii=False, indent=2))
    return 0


def cmd_payments_reconcile(args: argparse.Namespace) -> int:
    from payments.channels.base import ChannelDeclined, ChannelUnavailable, StatementError
    from payments.reconciliation import sources
    from payments.reconciliation.service import reconcile, report
    from payments.reconciliation.staging import file_digest

    runtime = _runtime()
    try:
        prepare(runtime, migrate=False)
        with sources.source_for(runtime, args.channel) as (source, adapter):
            if args.file:
                with open(args.file, "rb") as data:  # read twice: the digest first finds a file imported before
                    digest = file_digest(data)
                with open(args.file, "rb") as data:
                    done = reconcile(runtime.sessions, source, args.date, data, digest=digest)
            elif adapter is None:
                raise CommandError(f"channel {args.channel} is not configured: give the statement with --file")
            else:
                try:
                    statement = adapter.fetch_statement(args.date)
                except (ChannelUnavailable, ChannelDeclined) as exc:
                    raise CommandError(f"the {args.channel} statement of {args.date}: {exc}") from None
                done = reconcile(runtime.sessions, source, args.date, statement.splitlines(keepends=True))
        with unit_of_work(runtime.sessions) as session:
            result = report(session, done.run_id, limit=args.limit) or {}
    except sources.UnknownChannel as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot read the statement: {exc.strerror or exc}") from None
    except StatementError as exc:
        # Refused whole: nothing of the file was imported.
        print(json.dumps({"error": "statement_refused", "line": exc.line_no, "message": str(exc)}, ensure_ascii=False))
        return 2
    finally:
        runtime.close()
    result["reused"] = done.reused
    result["seconds"] = {"stage": done.stage_seconds, "match": done.match_seconds, "resolve": done.resolve_seconds}
    print(json.dumps(result, ensure_ascii=False, indent=2))
    # Exit 1 while anything is parked for review, so that the morning's cron run raises it.
    return 1 if any(key.endswith(":parked") for key in result["resolutions"]) else 0


def cmd_payments_reconcile_report(args: argparse.Namespace) -> int:
    from payments.reconciliation.service import latest_run, report

    with _admin() as (_, session):
        run_id = args.run
        if run_id is None:
            if not (args.channel and args.date):
                raise CommandError("give --run, or --channel and --date")
            run = latest_run(session, args.channel, args.date)
            run_id = run.id if run is not None else None
        result = report(session, run_id, limit=args.limit) if run_id is not None else None
    if result is None:
        raise CommandError("no such reconciliation run")
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


def cmd_payments_check_ledger(_args: argparse.Namespace) -> int:
    from payments.ledger.check import check

    with _admin() as (_, session):
        report = check(session)
    print(json.dumps(report.as_dict(), indent=2))
    # Exit 1 on a discrepancy, so that cron or monitoring raises it the next morning.
    return 0 if report.ok else 1


def cmd_payments_withholding(args: argparse.Namespace) -> int:
    from payments.withholding import commands

    return commands.run(args, _admin)


def cmd_payments_sweep(args: argparse.Namespace) -> int:
    from payments.recovery.sweep import configured_channels, run

    with _admin() as (runtime, _), configured_channels(runtime) as channels:
        report = run(runtime, channels, batch=args.batch)
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}")
        return value

    return parse


def _client_command(run: Callable[[Runtime, Session], None]) -> int:
    from authsvc.clients.service import ClientError

    try:
        with _admin() as (runtime, session):
            run(runtime, session)
    except ClientError as exc:
        raise CommandError(exc.detail) from exc
    return 0


def cmd_client_add(args: argparse.Namespace) -> int:
    from authsvc.clients import service
    from authsvc.clients.models import SubjectType
    from authsvc.oauth import scopes

    spec = service.ClientSpec(name=args.name, redirect_uris=args.redirect_uri or [])
    spec.post_logout_redirect_uris = args.post_logout_redirect_uri or []
    spec.auth_method = args.auth_method
    if args.jwks:
        try:
            spec.jwks = service.jwks_from_file(Path(args.jwks).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"cannot read {args.jwks}: {exc}") from exc
    spec.jwks_uri = args.jwks_uri
    if args.scope is not None:
        spec.scopes = scopes.parse(args.scope)
    if args.acr:
        spec.acr_values = args.acr
    if args.grant:
        spec.grant_types = args.grant
    spec.ssn_min_acr = args.ssn_min_acr
    spec.fapi, spec.require_dpop, spec.may_introspect = args.fapi, args.dpop, args.introspect
    if args.pairwise:
        spec.subject_type = SubjectType.PAIRWISE
        spec.sector_identifier = args.sector_identifier
    elif args.sector_identifier:
        raise CommandError("--sector-identifier goes with --pairwise")
    spec.backchannel_logout_uri = args.backchannel_logout_uri

    def run(runtime: Runtime, session: Session) -> None:
        client, secret = service.register(session, runtime.hmac_keys, spec, actor="cli")
        registration = service.describe(client)
        if secret is not None:  # as in an RFC 7591 registration response: stdout stays one JSON document
            registration["client_secret"] = secret
            print("the client_secret is shown once: only a keyed digest is stored", file=sys.stderr)
        print(json.dumps(registration, indent=2, ensure_ascii=False))

    return _client_command(run)


def cmd_client_list(_args: argparse.Namespace) -> int:
    from authsvc.clients import service

    def run(_runtime: Runtime, session: Session) -> None:
        print(json.dumps([service.describe(c) for c in service.list_all(session)], indent=2, ensure_ascii=False))

    return _client_command(run)


def cmd_client_show(args: argparse.Namespace) -> int:
    from authsvc.clients import service

    def run(_runtime: Runtime, session: Session) -> None:
        client = service.get(session, args.client_id)
        if client is None:
            raise CommandError(f"no client {args.client_id!r}")
        print(json.dumps(service.describe(client), indent=2, ensure_ascii=False))

    return _client_command(run)


def cmd_client_disable(args: argparse.Namespace) -> int:
    from authsvc.clients import service
    from authsvc.clients.models import ClientStatus

    def run(_runtime: Runtime, session: Session) -> None:
        service.set_status(session, args.client_id, ClientStatus.DISABLED, actor="cli")
        print(f"client {args.client_id} is disabled (every worker refuses it within SSCARD_KEY_CACHE_SECONDS)")

    return _client_command(run)


def cmd_client_rotate_secret(args: argparse.Namespace) -> int:
    from authsvc.clients import service

    def run(runtime: Runtime, session: Session) -> None:
        secret = service.rotate_secret(session, runtime.hmac_keys, args.client_id, actor="cli")
        print(json.dumps({"client_id": args.client_id, "client_secret": secret}, indent=2))
        print("shown once; the old secret stops working within SSCARD_KEY_CACHE_SECONDS", file=sys.stderr)

    return _client_command(run)


def cmd_demo(args: argparse.Namespace) -> int:
    from authsvc.demo import run_demo

    return run_demo(port=args.port, keep_running=not args.exit, browser=not args.no_browser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authsvc",
        description="sscard authentication service",
        epilog="Configuration comes from SSCARD_* environment variables (see README). Exit codes: 0 done, "
        "1 refused (the message says why), 2 usage or configuration error.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        parent: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add(sub, "serve", cmd_serve, "run the HTTP service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-* from the proxy in front")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    add(db, "upgrade", cmd_db_upgrade, "apply all migrations")

    ch = sub.add_parser("cardholder", help="the cardholder registry").add_subparsers(dest="ch", required=True)
    p = add(ch, "add", cmd_cardholder_add, "register a cardholder")
    p.add_argument("--ssn", required=True, help="18-character social security number")
    p.add_argument("--name", required=True)
    p.add_argument("--sex", choices=["0", "1", "2", "9"], help="GB/T 2261.1 code; default from the number")
    p.add_argument("--region", help="6-digit region code; default from the number")
    p = add(ch, "import", cmd_cardholder_import, "register cardholders from a CSV file (ssn,name[,sex][,region_code])")
    p.add_argument("file")
    from authsvc.liveness.commands import add_cardholder_commands, add_sandbox_commands

    add_cardholder_commands(ch, add)
    sandbox = sub.add_parser("sandbox", help="simulators of outside services, for tests and demonstrations")
    add_sandbox_commands(sandbox.add_subparsers(dest="sandbox", required=True), add)

    card = sub.add_parser("card", help="cards").add_subparsers(dest="card_command", required=True)
    p = add(card, "issue", cmd_card_issue, "personalise a card for a cardholder and write its software-card file")
    p.add_argument("--ssn", required=True)
    p.add_argument("--generation", type=int, choices=[2, 3], required=True)
    p.add_argument("--pin", required=True, help="4 to 12 digits")
    p.add_argument("--out", required=True, help="card file to write (mode 0600)")
    p.add_argument("--algorithm", choices=["3des", "sm4"], default="3des", help="2nd generation card key algorithm")
    p = add(card, "set-status", cmd_card_set_status, "report a card lost, freeze, reactivate or cancel it")
    p.add_argument("card_number")
    p.add_argument("status", choices=["active", "reported_lost", "frozen", "cancelled"])

    term = sub.add_parser("terminal", help="kiosk terminals").add_subparsers(dest="t", required=True)
    p = add(term, "add", cmd_terminal_add, "register a kiosk and write its credential")
    p.add_argument("--id", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--region", default="110000")
    p.add_argument("--service", help="service URL to record in the credential file")
    p = add(term, "set-status", cmd_terminal_set_status, "enable or disable a kiosk")
    p.add_argument("id")
    p.add_argument("status", choices=["active", "disabled"])

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="k", required=True)
    add(keys, "init", cmd_keys_init, "create the first signing keys (active and next)")
    p = add(keys, "rotate", cmd_keys_rotate, "activate the next signing key, retire the active one, publish a new next")
    p.add_argument("--force", action="store_true", help="rotate even if the next key was published only just now")
    add(keys, "list", cmd_keys_list, "list key material (never the secrets)")

    lo = sub.add_parser("logout", help="back-channel logout").add_subparsers(dest="lo", required=True)
    add(lo, "deliver", cmd_logout_deliver, "attempt the due back-channel logout deliveries once (the service retries)")

    p = add(
        sub,
        "purge",
        cmd_purge,
        "delete SSO sessions, grants with their refresh tokens, settled back-channel logout deliveries and liveness "
        "sessions that ended, expired, were revoked or were settled more than --keep-days ago; prints the counts as "
        "JSON (schedule it with cron or a systemd timer)",
    )
    p.add_argument("--keep-days", type=_count(0, 36500), default=30, help="how long dead rows are kept (default 30)")
    # Each batch is one short transaction; the upper bound keeps a batch's key list within SQLite's bound parameters.
    p.add_argument("--batch", type=_count(1, 10000), default=1000, help="rows per statement (default 1000)")

    pay = sub.add_parser("payments", help="contribution payments").add_subparsers(dest="pay", required=True)
    p = add(
        pay,
        "reconcile",
        cmd_payments_reconcile,
        "import a channel's daily statement, match it against orders and refunds, resolve what the channel confirms "
        "and park the rest in suspense; the same file again returns its run; prints the report as JSON, exit 1 while "
        "anything is parked, 2 if the file is refused",
    )
    p.add_argument("--channel", required=True)
    p.add_argument("--date", required=True, type=date.fromisoformat, help="the statement's day (YYYY-MM-DD)")
    p.add_argument("--file", help="the statement file (default: fetch it from the channel)")
    p.add_argument("--limit", type=_count(0, 1000000), default=100, help="discrepancies listed (default 100)")
    p = add(pay, "reconcile-report", cmd_payments_reconcile_report, "print a reconciliation run as JSON")
    p.add_argument("--run", type=_count(1, 2**62), help="run id (default: the latest run of --channel and --date)")
    p.add_argument("--channel")
    p.add_argument("--date", type=date.fromisoformat)
    p.add_argument("--limit", type=_count(0, 1000000), default=1000, help="discrepancies listed (default 1000)")
    add(
        pay,
        "check-ledger",
        cmd_payments_check_ledger,
        "prove that the ledger's debits equal its credits, overall and in every entry, and that every order's state "
        "agrees with its entries; prints JSON, exit 1 if not",
    )
    from payments.withholding.commands import add_parsers as add_withholding_parsers

    add_withholding_parsers(pay, add, cmd_payments_withholding)
    p = add(
        pay,
        "refunds",
        cmd_payments_refunds,
        "list refunds, newest first, with who asked, who decided and what the channel said; prints JSON "
        "(requesting and deciding is the operators' API, /v1/payments/refunds)",
    )
    p.add_argument("--state", choices=["awaiting_approval", "requested", "succeeded", "failed", "rejected"])
    p.add_argument("--order", help="only this order's refunds")
    p.add_argument("--limit", type=_count(1, 100), default=100, help="newest refunds shown (default 100)")
    p = add(
        pay,
        "review",
        cmd_payments_review,
        "list the callbacks held for review (another amount, unknown order, conflict with the order's state) with "
        "counts per channel; prints JSON, exit 1 while any is waiting",
    )
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--limit", type=_count(1, 10000), default=100, help="newest rows shown (default 100)")
    p = add(
        pay,
        "sweep",
        cmd_payments_sweep,
        "ask the channels about orders whose callback has not come and about requested refunds, close orders past "
        "their expiry (at the channel first); prints the counts as JSON (schedule it with cron, every minute)",
    )
    p.add_argument("--batch", type=_count(1, 10000), default=100, help="orders and refunds per pass (default 100)")

    from keys.channel_keys import add_commands as add_channel_key_commands

    add_channel_key_commands(sub, add)

    cl = sub.add_parser("client", help="OAuth clients (portals, back ends, resource servers)").add_subparsers(
        dest="cl", required=True
    )
    p = add(cl, "add", cmd_client_add, "register a client; prints its registration, and its secret once")
    p.add_argument("--name", required=True, help="shown to citizens on the login page")
    p.add_argument("--redirect-uri", action="append", help="exact redirect URI (repeatable)")
    p.add_argument("--post-logout-redirect-uri", action="append", help="(repeatable)")
    p.add_argument(
        "--auth-method", choices=["private_key_jwt", "client_secret_basic", "none"], default="private_key_jwt"
    )
    keys_from = p.add_mutually_exclusive_group()
    keys_from.add_argument("--jwks", metavar="FILE", help="the client's public JWK Set (or one JWK) as JSON")
    keys_from.add_argument("--jwks-uri", metavar="URL", help="where the client publishes its JWK Set")
    p.add_argument("--scope", help="space-delimited scopes the client may ask for (default: openid profile)")
    p.add_argument(
        "--acr", action="append", help="assurance level the client may ask for (repeatable; first is default)"
    )
    p.add_argument(
        "--grant",
        action="append",
        choices=["authorization_code", "refresh_token", "client_credentials"],
        help="grant type (repeatable; default: authorization_code and refresh_token)",
    )
    p.add_argument("--ssn-min-acr", help="lowest level at which the social security number is released (ssn scope)")
    p.add_argument("--fapi", action="store_true", help="FAPI 2.0: PAR, DPoP and private_key_jwt required")
    p.add_argument("--dpop", action="store_true", help="DPoP-bound tokens required")
    p.add_argument("--pairwise", action="store_true", help="pairwise subject identifiers")
    p.add_argument("--sector-identifier", help="sector of a pairwise client (default: its redirect URIs' host)")
    p.add_argument("--backchannel-logout-uri")
    p.add_argument("--introspect", action="store_true", help="a resource server: may call token introspection")
    add(cl, "list", cmd_client_list, "list registered clients")
    p = add(cl, "show", cmd_client_show, "show a client's registration")
    p.add_argument("client_id")
    p = add(cl, "disable", cmd_client_disable, "disable a client (its tokens stop working too)")
    p.add_argument("client_id")
    p = add(cl, "rotate-secret", cmd_client_rotate_secret, "replace a client_secret_basic client's secret")
    p.add_argument("client_id")

    p = add(
        sub,
        "demo",
        cmd_demo,
        "embedded demo: service, software cards, real PC/SC kiosk logins, then browser single sign-on in headless "
        "Chromium at two demo portals",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--exit",
        action="store_true",
        help="stop after the demo instead of serving on; exit status 1 unless the kiosk logins and the browser "
        "sign-on both worked",
    )
    p.add_argument("--no-browser", action="store_true", help="skip the browser sign-on (a machine without Chromium)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"authsvc: {exc}", file=sys.stderr)
        return 2
    except (CommandError, RegistryError) as exc:
        print(f"authsvc: {exc}", file=sys.stderr)
        return 1
