"""The face check in `./dev demo`: the sandbox vendor (authsvc/liveness/sandbox.py) in the demo's process on a
loopback port, its keys and ours stored where an operator puts real ones (keys/channel_keys/, channel `liveness`),
the demo cardholders' reference photos in its gallery and on their registry rows, and the settings that point the
service at it. The service then talks to it exactly as it would to a real vendor.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import uvicorn

from authsvc.database import unit_of_work
from authsvc.demo_portal import serve_in_thread
from authsvc.liveness import wire
from authsvc.liveness.photos import set_reference_photo
from authsvc.liveness.sandbox import LivenessSandbox
from authsvc.registry import repository
from authsvc.runtime import Runtime
from keys.channel_keys import import_active

APP_ID = "sscard-demo"
VENDOR = "sandbox"


@dataclass
class DemoVendor:
    sandbox: LivenessSandbox
    env: dict[str, str] = field(default_factory=dict)  # the settings that point the service at it
    server: uvicorn.Server | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True


def start_vendor(runtime: Runtime, port: int, ssns: list[str]) -> DemoVendor:
    """The sandbox vendor serving on `port`, keys stored, and a reference photo for each registered `ssns`."""
    # Key ids of their own: a run after an earlier one brings new keys under new names, never a second key under an
    # old name.
    ours = wire.SigningKey.generate(f"sscard-demo-{secrets.token_hex(3)}")
    base = f"http://127.0.0.1:{port}"
    sandbox = LivenessSandbox(
        APP_ID,
        wire.KeyRing.of((ours.key_id, ours.private_key.public_key())),
        public_url=base,
        key_id=f"vendor-demo-{secrets.token_hex(3)}",
    )
    vendor_key = sandbox.keys[sandbox.signing_key_id]
    with unit_of_work(runtime.sessions) as db:
        for kind, data, serial in (
            ("liveness-api-key", ours.private_pem(), ours.key_id),
            ("liveness-vendor-key", vendor_key.public_pem(), vendor_key.key_id),
        ):
            # A later run's sandbox knows only this run's keys: they become the active ones at once.
            import_active(db, runtime.sealer, channel="liveness", kind=kind, data=data, serial=serial)
        for ssn in ssns:
            holder = repository.holder_by_ssn(db, ssn)
            if holder is None:
                continue
            photo = holder.photo_ref or f"gallery:{holder.subject[:12]}"
            set_reference_photo(db, ssn=ssn, photo_ref=photo)
            sandbox.add_reference(photo)
    vendor = DemoVendor(
        sandbox,
        {
            "SSCARD_LIVENESS_VENDOR": VENDOR,
            "SSCARD_LIVENESS_BASE_URL": base,
            "SSCARD_LIVENESS_APP_ID": APP_ID,
        },
    )
    vendor.server = serve_in_thread(sandbox.app, port, name="liveness-sandbox")
    return vendor
