"""Reader access through PC/SC (pyscard) and the T=0 response handling every caller needs.

`Reader` works on any `CardLink` (the PC/SC one here; tests plug a SoftCard in directly) and hides the T=0
dialogue: `61xx` is fetched with GET RESPONSE and `6Cxx` resent with the right Le, so callers see one
response per command whatever protocol the card speaks. `apdu_count` counts what really went to the card.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from smartcard import scard

from card.apdu import CommandAPDU, ResponseAPDU
from card.protocol import INS_GET_RESPONSE
from card.session import CardSession

__all__ = [
    "CardLink",
    "CardRemoved",
    "CardSession",
    "NoCard",
    "PcscLink",
    "PcscUnavailable",
    "Reader",
    "ReaderError",
    "ReaderMissing",
    "connect",
    "list_readers",
    "wait_for_card",
]


class ReaderError(Exception):
    """A problem with the reader or the PC/SC service rather than with the card's answers."""


class PcscUnavailable(ReaderError):
    pass


class ReaderMissing(ReaderError):
    pass


class NoCard(ReaderError):
    pass


class CardRemoved(ReaderError):
    pass


class CardLink(Protocol):
    def transmit_raw(self, apdu: bytes) -> bytes: ...

    def close(self) -> None: ...


# A card that keeps answering 61xx/6Cxx forever must not keep the kiosk in a loop.
_MAX_CHAINED = 64

# What a card leaving mid-exchange looks like from PC/SC: the next transmit fails with one of these.
_CARD_GONE = {
    scard.SCARD_W_REMOVED_CARD,
    scard.SCARD_E_NO_SMARTCARD,
    scard.SCARD_E_NOT_TRANSACTED,
    scard.SCARD_W_RESET_CARD,
    scard.SCARD_W_UNPOWERED_CARD,
    scard.SCARD_W_UNRESPONSIVE_CARD,
    scard.SCARD_F_COMM_ERROR,
}
_SERVICE_GONE = {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED}
_READER_GONE = {scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE}


def _rc_text(rc: int) -> str:
    return f"{scard.SCardGetErrorMessage(rc).strip()} ({rc & 0xFFFFFFFF:#010x})"


def _error(rc: int, reader_name: str, doing: str) -> ReaderError:
    if rc in _SERVICE_GONE:
        return PcscUnavailable("PC/SC service (pcscd) is not running")
    if rc in _READER_GONE:
        return ReaderMissing(f'reader "{reader_name}" not found')
    if rc in _CARD_GONE:
        return CardRemoved("card removed")
    return ReaderError(f"{doing} failed: {_rc_text(rc)}")


def _context() -> Any:
    rc, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if rc != scard.SCARD_S_SUCCESS:
        raise _error(rc, "", "connecting to PC/SC")
    return context


def _list(context: Any) -> list[str]:
    rc, readers = scard.SCardListReaders(context, [])
    if rc == scard.SCARD_E_NO_READERS_AVAILABLE:
        return []
    if rc != scard.SCARD_S_SUCCESS:
        raise _error(rc, "", "listing readers")
    return list(readers)


def list_readers() -> list[str]:
    context = _context()
    try:
        return _list(context)
    finally:
        scard.SCardReleaseContext(context)


def _wait_state(context: Any, reader_name: str, present: bool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    state = scard.SCARD_STATE_UNAWARE
    while True:
        remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
        rc, states = scard.SCardGetStatusChange(context, remaining_ms, [(reader_name, state)])
        if rc == scard.SCARD_E_TIMEOUT:
            return False
        if rc != scard.SCARD_S_SUCCESS:
            raise _error(rc, reader_name, "waiting for a card")
        state = states[0][1] & ~scard.SCARD_STATE_CHANGED
        is_present = bool(state & scard.SCARD_STATE_PRESENT) and not state & scard.SCARD_STATE_MUTE
        if is_present == present:
            return True
        if remaining_ms == 0:
            return False


def wait_for_card(reader_name: str, *, present: bool = True, timeout: float = 5.0) -> bool:
    """Wait until a card is in (or, with present=False, out of) the reader; False on timeout."""
    context = _context()
    try:
        if reader_name not in _list(context):
            raise ReaderMissing(f'reader "{reader_name}" not found')
        return _wait_state(context, reader_name, present, timeout)
    finally:
        scard.SCardReleaseContext(context)


class PcscLink:
    """An exclusive PC/SC connection to the card in one reader."""

    def __init__(self, reader_name: str, *, timeout: float = 5.0) -> None:
        self.reader_name = reader_name
        self._context = _context()
        try:
            self._handle, self.protocol, self.atr = self._connect(timeout)
        except BaseException:
            scard.SCardReleaseContext(self._context)
            raise
        self._pci = scard.SCARD_PCI_T0 if self.protocol == "T=0" else scard.SCARD_PCI_T1

    def _connect(self, timeout: float) -> tuple[Any, str, bytes]:
        name = self.reader_name
        if name not in _list(self._context):
            raise ReaderMissing(f'reader "{name}" not found')
        deadline = time.monotonic() + timeout
        while True:
            if not _wait_state(self._context, name, True, max(0.0, deadline - time.monotonic())):
                raise NoCard(f'no card in reader "{name}"')
            # Exclusive: nobody else may talk to the card while it holds this session's PIN state.
            rc, handle, protocol = scard.SCardConnect(
                self._context, name, scard.SCARD_SHARE_EXCLUSIVE, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
            )
            if rc == scard.SCARD_S_SUCCESS:
                break
            # The card may leave between "present" and connect, or another program may hold it briefly.
            retry = rc in _CARD_GONE or rc == scard.SCARD_E_SHARING_VIOLATION
            if not retry or time.monotonic() >= deadline:
                if rc == scard.SCARD_E_SHARING_VIOLATION:
                    raise ReaderError(f'reader "{name}" is in use by another program')
                if rc in _CARD_GONE:
                    raise NoCard(f'no card in reader "{name}"')
                raise _error(rc, name, "connecting to the card")
            time.sleep(0.05)
        rc, _, _, _, atr = scard.SCardStatus(handle)
        if rc != scard.SCARD_S_SUCCESS:
            scard.SCardDisconnect(handle, scard.SCARD_RESET_CARD)
            raise _error(rc, name, "reading the card status")
        return handle, "T=0" if protocol == scard.SCARD_PROTOCOL_T0 else "T=1", bytes(atr)

    def transmit_raw(self, apdu: bytes) -> bytes:
        rc, response = scard.SCardTransmit(self._handle, self._pci, list(apdu))
        if rc != scard.SCARD_S_SUCCESS:
            raise _error(rc, self.reader_name, "transmit")
        if len(response) < 2:
            # What a card leaving during the exchange can also look like (seen with vpcd): no status word.
            raise CardRemoved("card removed")
        return bytes(response)

    def close(self) -> None:
        # Reset, so that a PIN verified in this session does not outlive it for the next program.
        scard.SCardDisconnect(self._handle, scard.SCARD_RESET_CARD)
        scard.SCardReleaseContext(self._context)


class Reader:
    """APDU exchange with a card: one response per command, T=0 procedure bytes handled."""

    def __init__(self, link: CardLink, name: str = "") -> None:
        self.link = link
        self.name = name
        self.apdu_count = 0

    def _exchange(self, command: CommandAPDU) -> ResponseAPDU:
        self.apdu_count += 1
        raw = self.link.transmit_raw(command.encode())
        try:
            return ResponseAPDU.decode(raw)
        except ValueError as exc:
            raise ReaderError(f"the card's answer is not a response APDU: {raw.hex()}") from exc

    def transmit(self, command: CommandAPDU) -> ResponseAPDU:
        response = self._exchange(command)
        data = b""
        for _ in range(_MAX_CHAINED):
            if response.sw1 == 0x6C:
                # Wrong Le: the card says how many bytes it has; ask again with exactly that.
                command = command.with_le(response.sw2 or 256)
                response = self._exchange(command)
            elif response.sw1 == 0x61:
                data += response.data
                command = CommandAPDU(0x00, INS_GET_RESPONSE, 0x00, 0x00, le=response.sw2 or 256)
                response = self._exchange(command)
            else:
                return ResponseAPDU(data + response.data, response.sw1, response.sw2)
        raise ReaderError(f"the card kept asking for more exchanges after {_MAX_CHAINED}")

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(reader_name: str, *, timeout: float = 5.0) -> Reader:
    """Connect to the card in `reader_name`, waiting up to `timeout` seconds for one to be inserted."""
    return Reader(PcscLink(reader_name, timeout=timeout), reader_name)
