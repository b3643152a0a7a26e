from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.fixtures.service import LiveServer
from tests.integration.liveness.support import FaceHarness, harness


@pytest.fixture
def faces(live_server_factory: Callable[..., LiveServer]) -> Iterator[FaceHarness]:
    yield from harness(live_server_factory)
