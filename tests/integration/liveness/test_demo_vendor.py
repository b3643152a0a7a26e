"""The demo's vendor (authsvc/liveness/demo.py): keys stored, photos set, and a service pointed at it by its settings
runs a face check end to end."""

from __future__ import annotations

from collections.abc import Callable

from authsvc.database import unit_of_work
from authsvc.liveness.demo import start_vendor
from authsvc.registry import repository
from authsvc.registry import service as registry
from tests.fixtures.service import LiveServer, free_port
from tests.integration.liveness.support import NAME, OK, SSN, FaceHarness, problem


def test_the_demo_vendor_serves_a_face_check(live_server_factory: Callable[..., LiveServer]) -> None:
    service = live_server_factory()
    with unit_of_work(service.runtime.sessions) as db:
        subject = registry.add_cardholder(db, ssn=SSN, name=NAME).subject
    vendor = start_vendor(service.runtime, free_port(), [SSN, "11010519491231002X"])  # the second is not registered
    try:
        with unit_of_work(service.runtime.sessions) as db:
            holder = repository.holder_by_ssn(db, SSN)
            assert holder is not None and holder.photo_ref in vendor.sandbox.gallery
        settings = {name.removeprefix("SSCARD_").lower(): value for name, value in vendor.env.items()}
        faces = FaceHarness(live_server_factory(**settings), vendor.sandbox, subject)
        login = faces.login()
        [delivery] = faces.capture(login, "right_person")
        assert problem(delivery) == OK and faces.status(login)["status"] == "done"
    finally:
        vendor.stop()
