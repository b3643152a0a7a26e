"""`sscard`: run a software card, list readers, log in at a kiosk, sign in from a browser."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from card import ecard as ecard_client
from card import helper as card_helper
from card import kiosk as kiosk_client
from card import reader as pcsc
from card.application import SoftCard
from card.cardfile import CardFile, CardFileError
from card.kiosk import EXIT_CARD, EXIT_OK, EXIT_READER, EXIT_REFUSED, EXIT_SERVICE, EXIT_USAGE
from card.vpcd import DEFAULT_HOST, DEFAULT_PORT, VpcdUnavailable, run_card

DEFAULT_READER = "Virtual PCD 00 00"

EPILOG = f"""\
exit codes:
  {EXIT_OK}  success
  {EXIT_USAGE}  usage error or unusable input file (card.json, kiosk.json)
  {EXIT_CARD}  card or PIN problem: wrong PIN, PIN blocked, card not recognised, card error
  {EXIT_REFUSED}  refused by the service (card lost/expired/unknown, kiosk not authorised, throttled, ...)
  {EXIT_READER}  reader problem: reader not found, no card, card removed, pcscd/vpcd not available
  {EXIT_SERVICE}  service unreachable or answering with an error
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sscard", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log APDUs and progress on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emulate = sub.add_parser(
        "emulate",
        help="insert a software card into the vpcd virtual reader",
        description="Run CARD.json as a card in the vpcd virtual reader until killed (SIGTERM/SIGINT). "
        "The PIN retry counter is written back to CARD.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    emulate.add_argument("card", metavar="CARD.json")
    emulate.add_argument("--host", default=DEFAULT_HOST, help=f"vpcd host (default {DEFAULT_HOST})")
    emulate.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"vpcd port (default {DEFAULT_PORT})")
    emulate.add_argument(
        "--pull-after", type=int, metavar="N", help="pull the card out after answering N APDUs, then exit"
    )

    login = sub.add_parser(
        "login",
        help="log the card holder in with card and PIN",
        description="Log in with the card in READER and its PIN; prints the service's answer as one JSON object.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    login.add_argument("--service", metavar="URL", help='service base URL (default: kiosk.json\'s "service")')
    login.add_argument("--terminal", required=True, metavar="kiosk.json", help="this kiosk's identity file")
    login.add_argument("--reader", default=DEFAULT_READER, help=f'reader name (default "{DEFAULT_READER}")')
    login.add_argument("--pin", required=True, help='the PIN, or "-" to read it from the first line of stdin')
    login.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for a card and for each service request (default 10)",
    )

    helper = sub.add_parser(
        "helper",
        help="sign in from a browser with the card (desktop helper for the login page)",
        description="Listen on 127.0.0.1 for the service's login page: when the page asks, show the portal's name, ask "
        "the PIN, have the card sign the login's challenge bound to the page's origin, and send it to the service. "
        f"The PIN comes from --pin-file, else from ${card_helper.PIN_ENV} (automation), else from this terminal.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    helper.add_argument("--service", required=True, metavar="URL", help="the service's base URL (its issuer)")
    helper.add_argument(
        "--port", type=int, default=card_helper.DEFAULT_PORT, help=f"loopback port (default {card_helper.DEFAULT_PORT})"
    )
    helper.add_argument("--reader", default=DEFAULT_READER, help=f'reader name (default "{DEFAULT_READER}")')
    helper.add_argument("--pin-file", metavar="FILE", help="read the PIN from the first line of FILE (automation)")
    helper.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for a card and for each service request (default 30)",
    )

    sub.add_parser(
        "readers", help="list the PC/SC readers", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _ecard_parser(sub)
    return parser


def _ecard_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ecard = sub.add_parser(
        "ecard",
        help="the electronic social security card (a stand-in for the phone app)",
        description="Enrol a device key as an e-card, sign in by a login page's QR code, list and revoke e-cards. "
        "The device key is KEY (PEM, 0600, created on first use); the enrolment state is KEY.state.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = ecard.add_subparsers(dest="ecard_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, *, token: bool) -> None:
        p.add_argument("--key", required=True, type=Path, metavar="KEY", help="the device key file")
        if token:
            p.add_argument("--issuer", metavar="URL", help="the service (default: the enrolled one)")
            p.add_argument("--access-token", metavar="TOKEN", help="an access token with scope ecard")
            p.add_argument("--client-id", metavar="ID", help="the app's client_id, to sign in for a token instead")
            p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="sign-in wait (default 300)")

    enrol = actions.add_parser("enrol", help="sign in at the highest level and enrol the device key")
    common(enrol, token=True)
    enrol.add_argument("--device-name", default="sscard reference client", help="shown in the list of e-cards")
    login = actions.add_parser("login", help="sign in at a portal: scan the login page's QR code URL")
    login.add_argument("qr_url", metavar="QR-URL")
    common(login, token=False)
    login.add_argument("--yes", action="store_true", help="approve without asking (automation)")
    listing = actions.add_parser("list", help="your e-cards")
    common(listing, token=True)
    revoke = actions.add_parser("revoke", help="revoke one of your e-cards")
    revoke.add_argument("ecard_id", metavar="ID")
    common(revoke, token=True)


def _fail(command: str, message: str, code: int) -> int:
    print(f"sscard {command}: {message}", file=sys.stderr)
    return code


def _emulate(args: argparse.Namespace) -> int:
    try:
        cardfile = CardFile.load(args.card)
    except CardFileError as exc:
        return _fail("emulate", str(exc), EXIT_USAGE)
    if args.pull_after is not None and args.pull_after < 1:
        return _fail("emulate", "--pull-after must be at least 1", EXIT_USAGE)
    card = SoftCard(cardfile, persist=lambda cf: cf.save(args.card))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ident = cardfile.identification
    print(
        f"sscard emulate: card {ident.card_number} (generation {cardfile.generation}, {cardfile.protocol}) "
        f"in vpcd {args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        # vpcd hangs up when pcscd restarts; a card left in the reader is simply seen again.
        while not stop.is_set():
            answered = run_card(card, args.host, args.port, pull_after=args.pull_after, stop=stop)
            if args.pull_after is not None and answered >= args.pull_after:
                print(f"sscard emulate: card pulled out after {answered} APDUs", file=sys.stderr)
                break
            stop.wait(0.5)
    except VpcdUnavailable as exc:
        return _fail("emulate", str(exc), EXIT_READER)
    return EXIT_OK


def _read_pin(value: str) -> str:
    return sys.stdin.readline().strip() if value == "-" else value


def _login(args: argparse.Namespace) -> int:
    try:
        kiosk = kiosk_client.load_kiosk(args.terminal)
    except kiosk_client.KioskConfigError as exc:
        return _fail("login", str(exc), EXIT_USAGE)
    service = args.service or kiosk.service
    if not service:
        return _fail("login", "no --service given and kiosk.json names none", EXIT_USAGE)
    if not service.startswith(("http://", "https://")):
        return _fail("login", f"--service must be an http(s) URL, got {service!r}", EXIT_USAGE)
    try:
        result = kiosk_client.login(service, kiosk, args.reader, _read_pin(args.pin), timeout=args.timeout)
    except kiosk_client.LoginFailed as exc:
        return _fail("login", exc.message, exc.exit_code)
    print(json.dumps(result, ensure_ascii=False))
    return EXIT_OK


def _helper(args: argparse.Namespace) -> int:
    if not args.service.startswith(("http://", "https://")):
        return _fail("helper", f"--service must be an http(s) URL, got {args.service!r}", EXIT_USAGE)
    config = card_helper.HelperConfig(
        service=args.service.rstrip("/"),
        reader=args.reader,
        pin=card_helper.pin_source(args.pin_file),
        port=args.port,
        timeout=args.timeout,
    )
    try:
        server = card_helper.HelperServer(config)
    except OSError as exc:
        return _fail("helper", f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", EXIT_USAGE)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"sscard helper: listening on http://127.0.0.1:{args.port} for the login page of {config.origin}",
        file=sys.stderr,
        flush=True,
    )
    with server:
        server.serve_forever()
    return EXIT_OK


def _readers(args: argparse.Namespace) -> int:
    try:
        names = pcsc.list_readers()
    except pcsc.ReaderError as exc:
        return _fail("readers", str(exc), EXIT_READER)
    for name in names:
        print(name)
    return EXIT_OK


def _show(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _ecard_token(args: argparse.Namespace, issuer: str, *, acr: str | None) -> str:
    if args.access_token:
        return str(args.access_token)
    if not args.client_id:
        raise ecard_client.EcardError("usage", "give --access-token, or --client-id to sign in", EXIT_USAGE)

    def show(url: str) -> None:
        _show(f"sscard ecard: open this address in a browser and sign in:\n{url}")

    max_age = ecard_client.ENROL_MAX_AGE if acr is not None else None
    return ecard_client.native_sign_in(
        issuer, args.client_id, show_url=show, acr=acr, max_age=max_age, timeout=args.timeout
    )


def _confirm(args: argparse.Namespace, scanned: dict[str, object]) -> bool:
    _show(
        f"sscard ecard: sign in at 「{scanned.get('portal')}」 ({scanned.get('client_id')}), level {scanned.get('acr')}"
    )
    if args.yes:
        return True
    if not sys.stdin.isatty():
        _show("sscard ecard: not approved (no terminal to ask; use --yes)")
        return False
    return input("approve? [y/N] ").strip().lower() in ("y", "yes")


def _ecard(args: argparse.Namespace) -> int:
    command = f"ecard {args.ecard_command}"
    try:
        if args.ecard_command == "login":
            answer = ecard_client.sign_in(args.qr_url, args.key, confirm=lambda s: _confirm(args, s))
            face = answer.get("face")
            if isinstance(face, dict):
                _show(f"sscard ecard: the portal also needs a face check; capture at:\n{face.get('capture_url')}")
            print(json.dumps(answer, ensure_ascii=False))
            return EXIT_OK
        issuer = args.issuer or (ecard_client.load_state(args.key).issuer if args.ecard_command != "enrol" else None)
        if not issuer or not issuer.startswith(("http://", "https://")):
            return _fail(command, "--issuer must be the service's http(s) URL", EXIT_USAGE)
        issuer = issuer.rstrip("/")
        if args.ecard_command == "enrol":
            token = _ecard_token(args, issuer, acr=ecard_client.HIGH)
            result: object = ecard_client.enrol(issuer, args.key, token, device_name=args.device_name)
        elif args.ecard_command == "list":
            result = ecard_client.list_ecards(issuer, _ecard_token(args, issuer, acr=None))
        else:
            result = ecard_client.revoke(issuer, _ecard_token(args, issuer, acr=None), args.ecard_id)
    except ecard_client.EcardError as exc:
        return _fail(command, f"{exc.reason}: {exc.message}", exc.exit_code)
    print(json.dumps(result, ensure_ascii=False))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s"
    )
    handlers = {"emulate": _emulate, "login": _login, "helper": _helper, "readers": _readers, "ecard": _ecard}
    return handlers[args.command](args)
