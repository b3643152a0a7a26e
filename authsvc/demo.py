"""`authsvc demo`: the embedded default end to end — service, software cards in a real PC/SC stack, kiosk logins,
then single sign-on in a browser (headless Chromium, the scenario of authsvc/demo_browser.py) at two demo portals.

Everything lives under SSCARD_HOME (./var by default): the SQLite database, the key-encryption key, and the demo's
card, kiosk and portal files in var/demo/. Running it again reuses them.

Exit status: with `--exit`, 0 only when the kiosk logins and the browser sign-on both worked (1 otherwise, after
saying why): `--exit` is how scripts and tests check that everything works. A machine without Chromium passes
`--no-browser` to check the kiosk part alone. Without `--exit` the demo keeps serving whatever worked (a browser
that cannot start is reported, the kiosk part and the portals stay up for a human) and Ctrl-C ends it with 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import uvicorn

from authsvc import demo_payments
from authsvc.cli import CommandError, prepare
from authsvc.config import env_for_child, load_settings
from authsvc.database import unit_of_work
from authsvc.liveness import demo as liveness_demo
from authsvc.registry import repository, service
from authsvc.registry.models import CardStatus
from authsvc.runtime import Runtime
from authsvc.tokens import assurance
from card.cardfile import CardFile

READER = "Virtual PCD 00 00"
PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
PORTAL_NAMES = ["社保查询 Benefits portal (demo A)", "医保服务 Health insurance portal (demo B)"]
# Card + PIN by default; low for an e-card alone, high for a sensitive operation (step-up).
PORTAL_LEVELS = (assurance.SUBSTANTIAL, assurance.LOW, assurance.HIGH)
DEMO_PEOPLE = [
    # (ssn, name, generation, PIN, 2nd-generation algorithm)
    ("110105199003072813", "张伟", 3, "123456", None),
    ("330106198511124520", "李娜", 2, "654321", "sm4"),
]


def _say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def _pcscd_alive() -> bool:
    try:
        os.kill(int(PCSCD_SOCKET.with_name("pcscd.pid").read_text().strip("\x00\n ")), 0)  # pcscd writes a NUL
    except (OSError, ValueError):
        return False
    return PCSCD_SOCKET.exists()


def ensure_pcscd() -> None:
    if _pcscd_alive():
        return
    PCSCD_SOCKET.unlink(missing_ok=True)  # left by a pcscd that died
    binary = shutil.which("pcscd") or ("/usr/sbin/pcscd" if Path("/usr/sbin/pcscd").exists() else None)
    if binary is None:
        raise CommandError("pcscd is not installed: run `./dev demo`, which installs pcscd and vpcd")
    subprocess.run([binary], check=True)  # noqa: S603 - the system's pcscd; it daemonises
    for _ in range(50):
        if PCSCD_SOCKET.exists():
            return
        time.sleep(0.1)
    raise CommandError("pcscd did not start")


def _card_for(
    runtime: Runtime, ssn: str, name: str, generation: int, pin: str, algorithm: str | None, path: Path
) -> str:
    with unit_of_work(runtime.sessions) as session:
        holder = repository.holder_by_ssn(session, ssn)
        if holder is None:
            holder = service.add_cardholder(session, ssn=ssn, name=name)
        if path.exists():
            number = CardFile.load(path).identification.card_number
            card = repository.card_by_number(session, number)
            if card is not None and card.status == CardStatus.ACTIVE and CardFile.load(path).tries_left > 0:
                return number
        for card in repository.live_cards(session, holder.id):
            service.set_card_status(session, card.card_number, "cancelled")
        issued = service.issue_card(
            session, runtime.sealer, ssn=ssn, generation=generation, pin=pin, out=path, algorithm=algorithm or "3des"
        )
        return issued.card_number


def _kiosk(runtime: Runtime, path: Path, base_url: str) -> None:
    with unit_of_work(runtime.sessions) as session:
        registered = repository.terminal(session, "demo-kiosk") is not None
        if registered and path.exists():
            return
        if registered:
            raise CommandError(
                f"terminal demo-kiosk exists but {path} is gone; remove {runtime.settings.home} "
                "to start the demo afresh"
            )
        service.add_terminal(session, terminal_id="demo-kiosk", region_code="110000", out=path, service=base_url)


def _portal_clients(runtime: Runtime, path: Path, bases: list[str]) -> list[tuple[str, str, str]]:
    """(base URL, client_id, secret) of the demo portals, registered once and kept in var/demo/portals.json."""
    from authsvc.clients import service as clients
    from authsvc.clients.models import AuthMethod

    known = json.loads(path.read_text()) if path.exists() else {}
    out = []
    with unit_of_work(runtime.sessions) as session:
        for base, name in zip(bases, PORTAL_NAMES, strict=True):
            entry = known.get(base)
            existing = None if entry is None else clients.get(session, entry["client_id"])
            if entry is None or existing is None:
                spec = clients.ClientSpec(
                    name=name,
                    auth_method=AuthMethod.CLIENT_SECRET_BASIC,
                    redirect_uris=[f"{base}/callback"],
                    post_logout_redirect_uris=[f"{base}/"],
                    backchannel_logout_uri=f"{base}/backchannel",
                    acr_values=list(PORTAL_LEVELS),
                )
                client, secret = clients.register(session, runtime.hmac_keys, spec, actor="demo")
                entry = known[base] = {"client_id": client.client_id, "secret": secret}
            elif existing.acr_values != list(PORTAL_LEVELS):  # registered by an earlier version of the demo
                existing.acr_values = list(PORTAL_LEVELS)
            out.append((base, entry["client_id"], entry["secret"]))
    path.write_text(json.dumps(known, indent=2))
    path.chmod(0o600)
    return out


def _ecard_app(runtime: Runtime, path: Path) -> str:
    """The e-card app's client_id (a public native client), registered once and kept in var/demo/ecard-app.json."""
    from authsvc.clients import service as clients
    from authsvc.ecard import app_client

    known = json.loads(path.read_text()) if path.exists() else {}
    with unit_of_work(runtime.sessions) as session:
        if not known.get("client_id") or clients.get(session, known["client_id"]) is None:
            known = {"client_id": app_client.register(session, runtime.hmac_keys, actor="demo").client_id}
    path.write_text(json.dumps(known, indent=2))
    return str(known["client_id"])


def _free_ports(preferred: list[int], count: int) -> list[int]:
    """`count` ports of 127.0.0.1: the preferred ones when free (stable URLs across runs), else any free ones."""
    chosen: list[int] = []
    for candidate in [*preferred, *[0] * count]:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            chosen.append(probe.getsockname()[1])
        if len(chosen) == count:
            break
    return chosen


def _start_portals(issuer: str, portals: list[tuple[str, str, str]]) -> list[uvicorn.Server]:
    from authsvc.demo_portal import PortalConfig, create_portal, serve_in_thread

    servers = []
    for (base, client_id, secret), name in zip(portals, PORTAL_NAMES, strict=True):
        app = create_portal(PortalConfig(name, base, issuer, client_id, secret))
        servers.append(serve_in_thread(app, int(base.rsplit(":", 1)[1])))
    return servers


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise CommandError("the service exited during start-up")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise CommandError("the service did not become healthy")


@contextlib.contextmanager
def _card_inserted(env: dict[str, str], card: Path) -> Iterator[None]:
    """`sscard emulate CARD` in the virtual reader; readers wait for it, so no need to wait here."""
    emulator = subprocess.Popen([sys.executable, "-m", "card", "emulate", str(card)], env=env)  # noqa: S603
    try:
        yield
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=10)
        time.sleep(0.3)  # let pcscd notice the card is gone before the next one is inserted


def _login(env: dict[str, str], base_url: str, kiosk: Path, card: Path, pin: str) -> dict[str, object]:
    with _card_inserted(env, card):
        result = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "card",
                "login",
                "--service",
                base_url,
                "--terminal",
                str(kiosk),
                "--reader",
                READER,
                "--pin",
                pin,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    if result.returncode != 0:
        raise CommandError(f"kiosk login failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def _browser_sign_on(
    env: dict[str, str], base_url: str, helper_url: str, portals: list[str], card: Path, pin: str
) -> bool:
    """The browser scenario of authsvc/demo_browser.py, each step printed as it happens; False when it did not
    show single sign-on working (the reason is printed)."""
    from authsvc import demo_browser

    reason = demo_browser.unavailable()
    if reason is not None:
        _say(f"browser sign-on not shown: {reason}")
        return False
    helper_port = urlsplit(helper_url).port or 80
    _say(f"browser sign-on: the generation-3 card in the virtual reader, sscard helper at {helper_url}")
    try:
        # The helper's own lines (the portal it signs for, the outcome) show what a citizen would see in its window.
        with (
            _card_inserted(env, card),
            demo_browser.card_helper(
                base_url,
                port=helper_port,
                reader=READER,
                pin=pin,
                on_line=lambda line: print(f"    {line}", flush=True),
            ),
        ):
            demo_browser.run(base_url, portals[0], portals[1], report=_say)
    except demo_browser.BrowserUnavailable as exc:
        _say(f"browser sign-on not shown: {exc}")
        return False
    except demo_browser.ScenarioFailed as exc:
        _say(f"browser sign-on FAILED at {exc}")
        return False
    return True


def _real_person_and_ecard(
    env: dict[str, str],
    base_url: str,
    helper_url: str,
    portals: list[str],
    card: tuple[Path, str, int, str, str],
    app_client_id: str,
    demo_dir: Path,
) -> bool:
    """The real-person check and the electronic card (authsvc/ecard/demo.py), each step printed: the e-card app asks
    for the highest level, the browser signs in with card + PIN, then only the face is asked (the phone's camera at
    the liveness vendor's capture page), the app enrols its device key; a second browser signs in at portal B by the
    login page's QR code and the app; the card is reported lost and its e-card goes with it. False when a step failed
    (the reason is printed)."""
    from authsvc import demo_browser
    from authsvc.ecard import demo as ecard_demo

    path, pin, generation, number, _ = card
    key = demo_dir / "ecard-device.pem"  # a new phone each run: the previous run's card was reported lost
    for old in (key, key.with_name(key.name + ".state.json")):
        old.unlink(missing_ok=True)

    def phone_camera(capture_url: str) -> None:
        # The citizen's phone opens the vendor's capture page and looks into the camera (the sandbox's button).
        httpx.post(capture_url, data={"outcome": "right_person"}, timeout=10).raise_for_status()
        _say("phone: the liveness vendor's capture page sees a live face; the vendor posts its signed verdict")

    _say(f"real person and e-card: the generation-{generation} card in the virtual reader, liveness sandbox vendor")
    try:
        with (
            _card_inserted(env, path),
            demo_browser.card_helper(
                base_url,
                port=urlsplit(helper_url).port or 80,
                reader=READER,
                pin=pin,
                on_line=lambda line: print(f"    {line}", flush=True),
            ),
        ):
            ecard_demo.enrol(base_url, app_client_id, key, capture=phone_camera, report=_say)
        ecard_demo.sign_in(base_url, portals[1], key, acr=assurance.LOW, report=_say)
    except demo_browser.BrowserUnavailable as exc:
        _say(f"real person and e-card not shown: {exc}")
        return False
    except demo_browser.ScenarioFailed as exc:
        _say(f"real person and e-card FAILED at {exc}")
        return False
    lost = subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "authsvc", "card", "set-status", number, "reported_lost"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = "; ".join(lost.stdout.strip().splitlines())
    if lost.returncode != 0 or "revoked (card_reported_lost)" not in said:
        _say(f"real person and e-card FAILED: reporting the card lost did not revoke its e-card: {said or lost.stderr}")
        return False
    _say(f"card reported lost (authsvc card set-status): {said}")
    return True


def _helper_url() -> str:
    """SSCARD_HELPER_URL when set; else the helper's default port when free (what a citizen's `sscard helper`
    uses), else a free one, so that a helper already running on this machine does not stop the demo."""
    from card.helper import DEFAULT_PORT

    if os.environ.get("SSCARD_HELPER_URL"):
        return os.environ["SSCARD_HELPER_URL"]
    return f"http://127.0.0.1:{_free_ports([DEFAULT_PORT], 1)[0]}"


def _stop_on_sigterm() -> None:
    """SIGTERM (a supervisor, `kill`) stops the demo like Ctrl-C, so that the service child is stopped too and does
    not keep the port for the next run."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run_demo(*, port: int, keep_running: bool, browser: bool = True) -> int:
    _stop_on_sigterm()
    settings = load_settings(
        issuer=os.environ.get("SSCARD_ISSUER", f"http://127.0.0.1:{port}"), helper_url=_helper_url()
    )
    base_url = settings.issuer
    runtime = Runtime(settings)
    _say(f"embedded default: {settings.database_url}, store {settings.redis_url}")
    prepare(runtime, migrate=True)
    demo_dir = settings.home / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    cards = []
    for ssn, name, generation, pin, algorithm in DEMO_PEOPLE:
        path = demo_dir / f"card-gen{generation}.json"
        number = _card_for(runtime, ssn, name, generation, pin, algorithm, path)
        cards.append((path, pin, generation, number, ssn))
        _say(f"cardholder {name[0]}* has a generation-{generation} card {number[:2]}****{number[-3:]} ({path})")
    kiosk = demo_dir / "kiosk.json"
    _kiosk(runtime, kiosk, base_url)
    portal_bases = [f"http://127.0.0.1:{p}" for p in _free_ports([port + 1, port + 2], 2)]
    portals = _portal_clients(runtime, demo_dir / "portals.json", portal_bases)
    sandboxes = demo_payments.start_sandboxes(runtime, _free_ports([port + 3, port + 4], 2), demo_dir)
    _say(
        f"payment channel sandboxes: WeChat Pay at {sandboxes.env['SSCARD_WECHATPAY_BASE_URL']}, "
        f"bank at {sandboxes.env['SSCARD_BANK_BASE_URL']} (their keys stored with `authsvc channel-keys`)"
    )
    vendor = liveness_demo.start_vendor(runtime, _free_ports([port + 5], 1)[0], [p[0] for p in DEMO_PEOPLE])
    _say(
        f"liveness vendor sandbox at {vendor.env['SSCARD_LIVENESS_BASE_URL']} (keys stored with `authsvc "
        "channel-keys`, the cardholders' reference photos in its gallery)"
    )
    app_client_id = _ecard_app(runtime, demo_dir / "ecard-app.json")
    runtime.close()
    ensure_pcscd()

    env = {**env_for_child(settings), **sandboxes.env, **vendor.env}
    _say(f"starting the service at {base_url}")
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "authsvc", "serve", "--port", str(port), "--log-level", "warning"], env=env
    )
    servers: list[uvicorn.Server] = []
    browser_shown = not browser  # --no-browser: nothing to show, nothing missing
    identity_shown = not browser
    payments_shown = False
    try:
        _wait_healthy(base_url, server)
        jwks = jwt.PyJWKClient(f"{base_url}/jwks.json")
        logins = []
        for path, pin, generation, _, _ in cards:
            _say(f"kiosk login with the generation-{generation} software card through pcscd + vpcd + pyscard")
            answer = _login(env, base_url, kiosk, path, pin)
            print(json.dumps(answer, ensure_ascii=False, indent=2))
            id_token = str(answer["id_token"])
            claims = jwt.decode(
                id_token,
                jwks.get_signing_key_from_jwt(id_token).key,
                algorithms=["ES256"],
                audience="demo-kiosk",
                issuer=base_url,
            )
            _say(
                f"ID token verified against {base_url}/jwks.json: sub={claims['sub']} acr={claims['acr']} "
                f"amr={claims['amr']} ({answer['apdus']} APDUs)"
            )
            logins.append(answer)
        card3, pin3, _, number3, ssn3 = cards[0]
        try:
            payments_shown = demo_payments.run_payments(
                base_url,
                env,
                sandboxes,
                token=str(logins[0]["access_token"]),
                card_number=number3,
                insured_ssn=ssn3,
                say=_say,
            )
        except (httpx.HTTPError, RuntimeError) as exc:
            _say(f"the payments demo failed: {exc}")
        try:
            servers += _start_portals(base_url, portals)
        except RuntimeError as exc:  # the kiosk demo stands on its own; the portals are an extra
            _say(f"demo portals not started: {exc}")
        else:
            _say(f"demo portals: A at {portal_bases[0]}/, B at {portal_bases[1]}/")
            if browser:
                browser_shown = _browser_sign_on(env, base_url, settings.helper_url, portal_bases, card3, pin3)
                identity_shown = _real_person_and_ecard(
                    env, base_url, settings.helper_url, portal_bases, cards[1], app_client_id, demo_dir
                )
            if keep_running:
                from card.helper import DEFAULT_PORT

                helper_port = urlsplit(settings.helper_url).port
                port_flag = "" if helper_port == DEFAULT_PORT else f" --port {helper_port}"
                _say(
                    f"try it yourself: open {portal_bases[0]}/ and {portal_bases[1]}/ in a browser on this machine; "
                    f"insert the card with `sscard emulate {card3}` and run "
                    f"`sscard helper --service {base_url}{port_flag}` (PIN {pin3})"
                )
        if keep_running:
            _say(
                f"the service keeps running at {base_url} (discovery: {base_url}/.well-known/openid-configuration);"
                " Ctrl-C stops it"
            )
            server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        sandboxes.stop()
        vendor.stop()
        for portal in servers:
            portal.should_exit = True
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)
    if not payments_shown and not keep_running:
        _say("the payments demo did not work (see above): exit status 1")
        return 1
    if not browser_shown and not keep_running:
        # --exit is how scripts check the demo: a sign-on that was not shown is not a demo that worked.
        _say("the kiosk logins worked, the browser sign-on was not shown (see above): exit status 1")
        return 1
    if not identity_shown and not keep_running:
        _say("the real-person check and the e-card were not shown (see above): exit status 1")
        return 1
    if browser:
        _say(
            "done: kiosk logins with both card generations, contributions paid by card account and WeChat Pay and "
            "reconciled, browser single sign-on with logout everywhere, card + PIN + face at the highest level, "
            "and an e-card enrolled, signed in by QR code and revoked with its lost card"
        )
    return 0
