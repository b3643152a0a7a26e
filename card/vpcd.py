"""Carry a SoftCard's APDUs over the vpcd virtual reader (vsmartcard), so pcscd sees it as a real card.

The card is the TCP client; vpcd (loaded by pcscd) listens. Each message is a 2-byte big-endian length and
a payload; a 1-byte payload is a control message, anything else a command APDU to answer. Closing the
connection is how the card leaves the reader.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

from card.application import SoftCard
from card.protocol import INS_VERIFY

log = logging.getLogger(__name__)

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 35963
CTRL_POWER_OFF, CTRL_POWER_ON, CTRL_RESET, CTRL_ATR = 0x00, 0x01, 0x02, 0x04
# How often a blocked recv looks at the stop event; it bounds how long stopping takes, not APDU latency.
_POLL_INTERVAL = 0.05
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class VpcdUnavailable(ConnectionError):
    """vpcd did not accept a connection in time (is pcscd running with the vpcd driver?)."""


class _Closed(Exception):
    """The connection ended (vpcd closed it, or we were asked to stop)."""


def _connect(host: str, port: int, stop: threading.Event, timeout: float) -> socket.socket | None:
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        try:
            sock = socket.create_connection((host, port), timeout=1.0)
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise VpcdUnavailable(f"vpcd at {host}:{port} does not answer: {exc}") from exc
            stop.wait(0.1)
            continue
        # Each APDU is a tiny request/response; Nagle and delayed ACKs would add ~40 ms to every one.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(_POLL_INTERVAL)
        return sock
    return None


def _recv_exact(sock: socket.socket, n: int, stop: threading.Event) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if stop.is_set():
            raise _Closed
        if _QUICKACK is not None:
            # Linux clears QUICKACK after use, so it has to be re-armed before every read.
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            continue
        except OSError as exc:
            raise _Closed from exc
        if not chunk:
            raise _Closed
        buf += chunk
    return bytes(buf)


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


def _describe(apdu: bytes) -> str:
    if len(apdu) > 5 and apdu[1] == INS_VERIFY:
        return apdu[:5].hex().upper() + " <PIN block>"
    return apdu.hex().upper()


def run_card(
    card: SoftCard,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    pull_after: int | None = None,
    stop: threading.Event | None = None,
    connect_timeout: float = 10.0,
) -> int:
    """Insert `card` into vpcd and answer until `stop` is set, vpcd hangs up, or `pull_after` APDUs.

    Returns the number of command APDUs answered. Raises VpcdUnavailable when vpcd cannot be reached
    within `connect_timeout` seconds.
    """
    stop = stop if stop is not None else threading.Event()
    sock = _connect(host, port, stop, connect_timeout)
    if sock is None:
        return 0
    answered = 0
    try:
        while True:
            (length,) = struct.unpack(">H", _recv_exact(sock, 2, stop))
            payload = _recv_exact(sock, length, stop)
            if len(payload) == 1:
                _control(card, sock, payload[0])
                continue
            if not payload:
                continue
            response = card.process(payload)
            log.debug("C: %s  R: %s", _describe(payload), response.hex().upper())
            _send(sock, response)
            answered += 1
            if pull_after is not None and answered >= pull_after:
                log.info("card pulled out after %d APDUs", answered)
                break
    except (_Closed, ConnectionError):
        pass
    finally:
        card.power_off()
        sock.close()
    return answered


def _control(card: SoftCard, sock: socket.socket, code: int) -> None:
    log.debug("vpcd control %02X", code)
    if code == CTRL_POWER_OFF:
        card.power_off()
    elif code == CTRL_POWER_ON:
        card.power_on()
    elif code == CTRL_RESET:
        card.reset()
    elif code == CTRL_ATR:
        _send(sock, card.atr())
    else:
        log.warning("ignoring unknown vpcd control message %02X", code)
