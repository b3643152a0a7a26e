"""The payments part of `./dev demo`: contributions paid through two channels' sandboxes, then reconciled.

The WeChat Pay and bank sandboxes (payments/sandbox/) run in the demo's process on loopback ports. Their keys are put
where an operator puts real ones (`keys/channel_keys/`, sealed), and the service is started with those channels
enabled (`SSCARD_PAYMENT_CHANNELS`), so it talks to them exactly as it would talk to the channels: signed requests,
verified answers, signed callbacks into /v1/payments/callbacks/<channel>. Then, with the access token of a kiosk
card + PIN login:

1. a pension contribution charged at once to the bank account linked to the card (the card's financial account);
2. a contribution paid for a family member by WeChat Pay: the QR code, the payer "scans" it in the sandbox, the
   sandbox's signed callback reaches the service and the order is paid;
3. the day's WeChat Pay trade bill downloaded and reconciled against the ledger (`authsvc payments reconcile`);
4. `authsvc payments check-ledger`: debits equal credits and every order's state agrees with its entries.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives import serialization

from authsvc.database import unit_of_work
from authsvc.demo_portal import serve_in_thread
from authsvc.runtime import Runtime
from keys import channel_keys
from payments.channels import bank
from payments.reconciliation.matching import CHINA
from payments.sandbox.bank import BankSandbox
from payments.sandbox.wechatpay import Trade, WechatPaySandbox

CHANNELS = "wechatpay,card"
BANK_MERCHANT = "M100001"
CONTRIBUTION_FEN = 30000  # a residents' pension grade for 2025 in region 110000 (payments/orders/service.py)
FAMILY_MEMBER_SSN = "330106198511124520"
TRADES_FILE = "wechatpay-sandbox-trades.json"


def _pem(private_key: Any) -> bytes:
    return bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@dataclass
class Sandboxes:
    wechatpay: WechatPaySandbox
    bank: BankSandbox
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)  # the settings that point the service at them
    servers: list[uvicorn.Server] = field(default_factory=list)

    def stop(self) -> None:
        _remember(self.wechatpay, self.state_dir / TRADES_FILE)
        for server in self.servers:
            server.should_exit = True


def _store_keys(runtime: Runtime, channel: str, keys: list[tuple[str, bytes, str | None]]) -> None:
    """Import each key; one imported beside an earlier demo run's becomes `next`, and is promoted at once (the
    earlier sandbox is gone, its keys with it)."""
    with unit_of_work(runtime.sessions) as db:
        for kind, data, serial in keys:
            channel_keys.import_active(db, runtime.sealer, channel=channel, kind=kind, data=data, serial=serial)


def _recall(wechat: WechatPaySandbox, path: Path) -> None:
    """The trades earlier demo runs paid: the channel keeps them, so a later run's bill lists them like WeChat Pay's
    would (a sandbox starts empty, the service's database does not)."""
    if not path.exists():
        return
    for row in json.loads(path.read_text()):
        wechat.trades[row["out_trade_no"]] = Trade(
            out_trade_no=row["out_trade_no"],
            description=row["description"],
            amount_fen=row["amount_fen"],
            notify_url="",
            time_expire=None,
            code_url="",
            state="SUCCESS",
            transaction_id=row["transaction_id"],
            charged_fen=row["amount_fen"],
            success_time=datetime.fromisoformat(row["success_time"]),
        )


def _remember(wechat: WechatPaySandbox, path: Path) -> None:
    paid = [
        {
            "out_trade_no": t.out_trade_no,
            "description": t.description,
            "amount_fen": t.charged_fen or t.amount_fen,
            "transaction_id": t.transaction_id,
            "success_time": t.success_time.isoformat(),
        }
        for t in wechat.trades.values()
        if t.success_time is not None
    ]
    path.write_text(json.dumps(paid, ensure_ascii=False, indent=1))


def start_sandboxes(runtime: Runtime, ports: list[int], state_dir: Path) -> Sandboxes:
    """Both sandboxes serving, their keys stored in keys/, and the settings that enable the two channels."""
    # Serials of their own: a run after an earlier one brings new keys under new names, never a second key under
    # an old name.
    wechat = WechatPaySandbox(
        merchant_serial=secrets.token_hex(20).upper(),
        public_key_id=f"PUB_KEY_ID_{secrets.randbelow(10**20):020d}",
    )
    _recall(wechat, state_dir / TRADES_FILE)
    described = wechat.describe()
    _store_keys(
        runtime,
        "wechatpay",
        [
            ("merchant-key", described["merchant_private_key_pem"].encode(), described["merchant_serial"]),
            ("platform-public-key", described["platform_public_key_pem"].encode(), described["platform_public_key_id"]),
            ("apiv3-key", described["apiv3_key"].encode(), None),
        ],
    )
    ours = bank.SigningKey.generate(f"sscard-demo-{secrets.token_hex(2)}")
    gateway = BankSandbox(
        BANK_MERCHANT,
        bank.KeyRing.of((ours.key_id, ours.private_key.public_key())),
        bank_key=bank.SigningKey.generate(f"bank-demo-{secrets.token_hex(2)}"),
    )
    _store_keys(
        runtime,
        "bank",
        [
            ("signing-key", _pem(ours.private_key), ours.key_id),
            ("bank-public-key", gateway.bank_key.public_pem(), gateway.bank_key.key_id),
        ],
    )
    sandboxes = Sandboxes(wechat, gateway, state_dir)
    sandboxes.servers = [
        serve_in_thread(wechat.app, ports[0], name="wechatpay-sandbox"),
        serve_in_thread(gateway.app, ports[1], name="bank-sandbox"),
    ]
    sandboxes.env = {
        "SSCARD_PAYMENT_CHANNELS": CHANNELS,
        "SSCARD_WECHATPAY_MCHID": wechat.mchid,
        "SSCARD_WECHATPAY_APPID": wechat.appid,
        "SSCARD_WECHATPAY_BASE_URL": f"http://127.0.0.1:{ports[0]}",
        "SSCARD_BANK_MERCHANT_ID": BANK_MERCHANT,
        "SSCARD_BANK_BASE_URL": f"http://127.0.0.1:{ports[1]}",
    }
    return sandboxes


def _order(http: httpx.Client, token: str, **body: Any) -> dict[str, Any]:
    doc = {
        "insurance_type": "pension",
        "periods": ["2025"],
        "amount_fen": CONTRIBUTION_FEN,
        "region": "110000",
        **body,
    }
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": secrets.token_urlsafe(16)}
    answer = http.post("/v1/payments/orders", json=doc, headers=headers)
    answer.raise_for_status()
    order = answer.json()
    paid = http.post(f"/v1/payments/orders/{order['id']}/payment", headers={"Authorization": f"Bearer {token}"})
    if paid.status_code != 200:
        raise RuntimeError(f"starting the payment: {paid.status_code} {paid.text}")
    return dict(paid.json())


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "authsvc", "payments", *args], env=env, capture_output=True, text=True, timeout=120
    )
    return result.returncode, result.stdout or result.stderr


def run_payments(
    base_url: str,
    env: dict[str, str],
    sandboxes: Sandboxes,
    *,
    token: str,
    card_number: str,
    insured_ssn: str,
    say: Callable[[str], None],
) -> bool:
    """The scenario; False (after saying why) if any step did not do what it should."""
    linked = "card-account"
    sandboxes.bank.open_account(linked, 100_000)
    sandboxes.bank.link_card(card_number, linked)
    yuan = f"{CONTRIBUTION_FEN // 100}.{CONTRIBUTION_FEN % 100:02d}"
    with httpx.Client(base_url=base_url, timeout=30) as http:
        say(f"kiosk: pay a {yuan} yuan pension contribution from the card's financial account (card + PIN login)")
        card = _order(http, token, insured_ssn=insured_ssn, channel="card")
        balance = sandboxes.bank.accounts[linked].balance_fen
        print(
            f"    order {card['order']['id']}: {card['order']['state']}, paid by {card['payment']['method']}; "
            f"linked account balance 1000.00 → {balance // 100}.{balance % 100:02d} yuan",
            flush=True,
        )
        if card["order"]["state"] != "paid":
            say("the card account payment did not end paid")
            return False

        say("portal: pay a family member's contribution by WeChat Pay")
        wx = _order(http, token, insured_ssn=FAMILY_MEMBER_SSN, payer_kind="agent", channel="wechatpay")
        order_no = wx["order"]["id"]
        print(f"    order {order_no}: {wx['order']['state']}, QR code {wx['payment']['code_url']}", flush=True)
        transaction = sandboxes.wechatpay.pay(order_no)  # the payer scans and pays; the signed callback follows
        state = http.get(f"/v1/payments/orders/{order_no}", headers={"Authorization": f"Bearer {token}"}).json()
        print(f"    WeChat Pay transaction {transaction}: callback delivered, order {state['state']}", flush=True)
        if state["state"] != "paid":
            say("the WeChat Pay callback did not pay the order")
            return False

    day = datetime.now(CHINA).date()
    # WeChat Pay (and its sandbox's API) makes a day's bill only the next morning; the demo takes today's from the
    # sandbox directly and hands the file to the same command the nightly job runs.
    bill = sandboxes.state_dir / f"wechatpay-tradebill-{day.isoformat()}.csv"
    bill.write_bytes(sandboxes.wechatpay.bill(day))
    say(f"reconcile the WeChat Pay trade bill of {day.isoformat()} ({bill}) against the ledger")
    code, out = _cli(env, "reconcile", "--channel", "wechatpay", "--date", day.isoformat(), "--file", str(bill))
    try:
        report = json.loads(out)
    except ValueError:
        say(f"reconciliation failed: {out.strip()[:300]}")
        return False
    counts = {
        category: sum(report["totals"][kind][category]["count"] for kind in ("payment", "refund"))
        for category in ("matched", "channel_only", "ours_only", "amount_mismatch")
    }
    print(f"    run {report['run_id']}: {report['lines']} statement lines, {counts} → {report['status']}", flush=True)
    if code != 0:
        say("reconciliation left something parked for review (`authsvc payments reconcile-report`)")
        return False
    say("check the ledger: debits equal credits, every order agrees with its entries")
    code, out = _cli(env, "check-ledger")
    print(f"    {' '.join(out.split())[:400]}", flush=True)
    return code == 0
