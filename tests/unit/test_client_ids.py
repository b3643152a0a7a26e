from __future__ import annotations

import pytest

from authsvc.clients import service


def test_a_client_id_never_starts_like_a_command_line_option(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["-looks-like-an-option", "_fine"])
    monkeypatch.setattr(service.secrets, "token_urlsafe", lambda _n: next(drawn))
    assert service.new_client_id() == "_fine"


def test_client_ids_are_base64url_of_144_bits() -> None:
    ids = {service.new_client_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 24 and not i.startswith("-") for i in ids)
