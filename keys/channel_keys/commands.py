"""`authsvc channel-keys ...`: the operator's commands over keys/channel_keys/store.py and the WeChat Pay
certificate refresh, each audited. authsvc.cli, the audit service and the HTTP client are imported inside the
functions, as in the single module before the split: the CLI imports this module while it builds its parser, and
the rest is needed only when a command runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from authsvc.database import unit_of_work
from keys.channel_keys.kinds import CHANNELS, SPECS, ChannelKeyError
from keys.channel_keys.store import describe, import_key, list_keys, promote, retire
from keys.channel_keys.wechatpay_certificates import RefreshError, refresh_wechatpay_certificates


def _audit(session: Session, event: str, detail: dict[str, Any]) -> None:
    from authsvc.audit import service as audit

    audit.record(session, event=event, outcome="success", detail=detail)


def _command(run: Callable[[Any, Session], int]) -> int:
    from authsvc.cli import CommandError, _admin

    try:
        with _admin() as (runtime, session):
            return run(runtime, session)
    except (ChannelKeyError, RefreshError) as exc:
        raise CommandError(str(exc)) from exc


def cmd_import(args: Any) -> int:
    from pathlib import Path

    from authsvc.cli import CommandError

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror}") from None

    def run(runtime: Any, session: Session) -> int:
        record = import_key(
            session, runtime.sealer, channel=args.channel, kind=args.kind, data=data, serial=args.serial
        )
        shown = describe(record, runtime.sealer)
        _audit(session, "channel_key_imported", {"kid": record.kid, "kind": record.label, "state": record.state})
        print(json.dumps(shown.as_dict(), indent=2))
        return 0

    return _command(run)


def cmd_list(args: Any) -> int:
    def run(runtime: Any, session: Session) -> int:
        print(json.dumps([k.as_dict() for k in list_keys(session, runtime.sealer, args.channel)], indent=2))
        return 0

    return _command(run)


def cmd_promote(args: Any) -> int:
    def run(_runtime: Any, session: Session) -> int:
        record, old = promote(session, args.kid)
        _audit(session, "channel_key_promoted", {"kid": record.kid, "retired": old.kid if old else None})
        extra = ""
        if old is not None:
            extra = f"; {old.kid} is retired"
            if old.publish_until is not None and old.publish_until > old.retired_at:  # type: ignore[operator]
                extra += f" and still decrypts until {old.publish_until.isoformat()}"
        print(f"{record.kid} is the active {record.label}{extra}")
        return 0

    return _command(run)


def cmd_retire(args: Any) -> int:
    def run(_runtime: Any, session: Session) -> int:
        record = retire(session, args.kid)
        _audit(session, "channel_key_retired", {"kid": record.kid, "kind": record.label})
        print(f"{record.kid} is retired")
        return 0

    return _command(run)


def cmd_refresh_wechatpay_certificates(_args: Any) -> int:
    from authsvc.cli import CommandError, _admin
    from payments.channels.setup import http_client

    with _admin() as (runtime, _session):
        settings = runtime.settings
        if not settings.wechatpay_mchid:
            raise CommandError("SSCARD_WECHATPAY_MCHID is not set")
        with http_client(settings.wechatpay_base_url, settings) as http:
            try:
                report = refresh_wechatpay_certificates(
                    runtime.sessions,
                    runtime.sealer,
                    http,
                    base_url=settings.wechatpay_base_url,
                    mchid=settings.wechatpay_mchid,
                )
            except (ChannelKeyError, RefreshError) as exc:
                raise CommandError(str(exc)) from exc
        with unit_of_work(runtime.sessions) as session:
            _audit(session, "wechatpay_certificates_refreshed", report.as_dict())
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def add_commands(sub: Any, add: Callable[..., Any]) -> None:
    """authsvc/cli.py: the `channel-keys` command group."""
    group = sub.add_parser("channel-keys", help="payment channel keys and secrets (sealed, rotatable)")
    ck = group.add_subparsers(dest="ck", required=True)
    p = add(ck, "import", cmd_import, "store a channel key from the channel console's PEM or base64 text")
    p.add_argument("--channel", required=True, choices=CHANNELS)
    p.add_argument("--kind", required=True, help=", ".join(f"{k} ({s.channel})" for k, s in SPECS.items()))
    p.add_argument("--file", required=True, help="PEM, the console's bare base64, or the APIv3 key's 32 characters")
    p.add_argument(
        "--serial", help="the channel's name for the key: merchant certificate serial, PUB_KEY_ID_..., key id"
    )
    p = add(ck, "list", cmd_list, "list channel keys: kids, kinds, states, fingerprints (never the secrets)")
    p.add_argument("--channel", choices=CHANNELS)
    p = add(ck, "promote", cmd_promote, "make a next key active (the active one is retired)")
    p.add_argument("kid")
    p = add(ck, "retire", cmd_retire, "stop using a key now (never the last active one of its kind)")
    p.add_argument("kid")
    add(
        ck,
        "refresh-wechatpay-certificates",
        cmd_refresh_wechatpay_certificates,
        "download WeChat Pay's platform certificates, check them and store new ones (schedule it every 12 hours)",
    )
