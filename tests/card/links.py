"""Card links for tests that need a card but not PC/SC: the SoftCard in process, or a scripted card."""

from __future__ import annotations

from card.application import SoftCard
from card.reader import CardRemoved


class DirectLink:
    """Hands APDUs straight to a SoftCard and keeps the exchange log; `pull_after` simulates removal."""

    def __init__(self, card: SoftCard, *, pull_after: int | None = None) -> None:
        self.card = card
        self.pull_after = pull_after
        self.log: list[tuple[bytes, bytes]] = []
        self.closed = False
        card.power_on()

    def transmit_raw(self, apdu: bytes) -> bytes:
        if self.pull_after is not None and len(self.log) >= self.pull_after:
            raise CardRemoved("card removed")
        response = self.card.process(apdu)
        self.log.append((apdu, response))
        return response

    def close(self) -> None:
        self.closed = True
        self.card.power_off()


class ScriptedLink:
    """Answers each command (hex) from a table; unknown commands get 6D00."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = {k.upper(): bytes.fromhex(v) for k, v in answers.items()}
        self.sent: list[str] = []

    def transmit_raw(self, apdu: bytes) -> bytes:
        self.sent.append(apdu.hex().upper())
        return self.answers.get(apdu.hex().upper(), b"\x6d\x00")

    def close(self) -> None:
        pass
