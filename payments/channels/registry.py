"""The payment channels a running service talks to, by name, with the clock their time windows use.

Installed on the application at start (`install(app, channels)`); routes and jobs look adapters up here and never
build one themselves, so a test or the sandbox swaps in simulators in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from payments.channels.base import ChannelAdapter


@dataclass(frozen=True)
class Channels:
    adapters: Mapping[str, ChannelAdapter] = field(default_factory=dict)
    clock: Callable[[], float] = time.time  # injectable so that tests need no real-time windows

    def get(self, name: str) -> ChannelAdapter | None:
        return self.adapters.get(name)

    def names(self) -> list[str]:
        return sorted(self.adapters)


def install(app: FastAPI, channels: Channels) -> None:
    app.state.payment_channels = channels


def current(app: FastAPI) -> Channels:
    return getattr(app.state, "payment_channels", None) or Channels()


def _from_request(request: Request) -> Channels:
    return current(request.app)


ChannelsDep = Annotated[Channels, Depends(_from_request)]
