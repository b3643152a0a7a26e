"""The configured liveness vendor of one process, built from Settings and its keys in keys/channel_keys/ (channel
`liveness`: our `liveness-api-key` signs requests, the vendor's `liveness-vendor-key`s verify its answers and
callbacks, every active and next one, so a rotation at the vendor has two valid at once).

`Runtime.liveness` holds one `Liveness`. Like payments/channels/setup.py's KeyedAdapter it rebuilds the adapter
whenever the keyring re-read the keys (every SSCARD_KEY_CACHE_SECONDS), so a promoted or retired vendor key reaches
every worker without a restart. With no vendor configured, or its settings or keys missing, `vendor()` raises
VendorUnavailable naming what is missing and the face check is not offered (`available()` is False).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx
from sqlalchemy.exc import SQLAlchemyError

from authsvc.config import Settings
from authsvc.liveness import wire
from authsvc.liveness.generic import GenericConfig, GenericVendor
from authsvc.liveness.vendor import LivenessVendor, VendorUnavailable
from keys.channel_keys import ChannelKeyring, ChannelMaterial
from keys.sealing import SealError

log = logging.getLogger("sscard.liveness")

KEYS = "liveness"  # the channel name of its keys in keys/channel_keys/
HTTP_TIMEOUT = 10.0


def callback_url(settings: Settings) -> str:
    return f"{settings.issuer}/v1/liveness/callbacks/{settings.liveness_vendor}"


class Liveness:
    """This process's liveness vendor, following its keys. `clock` is the time every liveness rule reads (the
    callback window, session expiry); tests move it instead of waiting."""

    def __init__(
        self,
        settings: Settings,
        keyring: ChannelKeyring,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._keyring = keyring
        self._transport = transport
        self._http: httpx.Client | None = None
        self._built: tuple[ChannelMaterial, GenericVendor] | None = None
        self._guard = threading.Lock()
        self._said: str | None = None

    @property
    def name(self) -> str:
        return self.settings.liveness_vendor

    def _client(self) -> httpx.Client:
        with self._guard:
            if self._http is None:
                self._http = httpx.Client(
                    base_url=self.settings.liveness_base_url,
                    timeout=httpx.Timeout(HTTP_TIMEOUT, connect=5.0),
                    follow_redirects=False,  # a signed API answers itself
                    trust_env=False,
                    transport=self._transport,
                )
            return self._http

    def vendor(self) -> LivenessVendor:
        """The adapter for the keys as they are now; VendorUnavailable (naming settings and key kinds, never values)
        when something is missing."""
        settings = self.settings
        unset = [
            f"SSCARD_{name.upper()}"
            for name in ("liveness_vendor", "liveness_base_url", "liveness_app_id")
            if not getattr(settings, name)
        ]
        if unset:
            raise VendorUnavailable(" and ".join(unset) + " not set")
        try:
            material = self._keyring.get(KEYS)
        except (SQLAlchemyError, SealError) as exc:
            raise VendorUnavailable(f"its keys cannot be read ({type(exc).__name__})") from None
        built = self._built
        if built is not None and built[0] is material:
            return built[1]
        lacking = material.missing(["signer", "verify"])
        if lacking:
            names = {"signer": "active liveness-api-key", "verify": "liveness-vendor-key"}
            raise VendorUnavailable("no " + " and no ".join(names[m] for m in lacking) + f" in keys (pay:{KEYS})")
        assert material.signer is not None and material.signer.serial is not None
        try:
            config = GenericConfig(
                name=settings.liveness_vendor,
                app_id=settings.liveness_app_id,
                signing_key=wire.SigningKey(material.signer.serial, material.signer.private_key),
                vendor_keys=wire.KeyRing.of(*material.verify_keys.items()),
                max_age=settings.liveness_callback_window,
                max_ahead=settings.liveness_callback_skew,
            )
        except ValueError as exc:
            raise VendorUnavailable(f"the adapter refused its configuration: {exc}") from None
        # Our requests carry the wall clock's time (the vendor checks it); `clock` is for our own rules only.
        adapter = GenericVendor(config, self._client(), clock=time.time)
        self._built = (material, adapter)
        return adapter

    def available(self) -> bool:
        if not self.settings.liveness_vendor:
            return False
        try:
            self.vendor()
        except VendorUnavailable as exc:
            # Asked on every status poll: said once per reason, not once per poll.
            if str(exc) != self._said:
                self._said = str(exc)
                log.error("the face check is not available: %s", exc)
            return False
        self._said = None
        return True

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
