"""`sscard`: run a software card, list readers, log in at a kiosk, sign in from a browser."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

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
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s"
    )
    handlers = {"emulate": _emulate, "login": _login, "helper": _helper, "readers": _readers}
    return handlers[args.command](args)
