"""`authsvc cardholder set-photo` and `authsvc sandbox liveness`. authsvc.cli is imported inside the functions: the
CLI imports this module while it builds its parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def cmd_set_photo(args: argparse.Namespace) -> int:
    from authsvc.audit import service as audit
    from authsvc.cli import CommandError, _admin
    from authsvc.liveness.photos import set_reference_photo
    from authsvc.registry.masking import mask_photo_ref, mask_ssn

    if bool(args.clear) == bool(args.photo_ref):
        raise CommandError("give either a photo reference or --clear")
    photo_ref = None if args.clear else args.photo_ref
    with _admin() as (_, session):
        holder = set_reference_photo(session, ssn=args.ssn, photo_ref=photo_ref)
        shown = mask_photo_ref(photo_ref) if photo_ref else None
        audit.record(
            session, event="reference_photo_set", outcome="success", subject=holder.subject, detail={"photo": shown}
        )
    print(f"cardholder {mask_ssn(holder.ssn)}: reference photo {shown or 'cleared'}")
    return 0


def cmd_sandbox_liveness(args: argparse.Namespace) -> int:
    from authsvc.liveness.sandbox import serve

    return serve(args)


def add_cardholder_commands(group: Any, add: Callable[..., Any]) -> None:
    """Under `authsvc cardholder`."""
    p = add(group, "set-photo", cmd_set_photo, "set the id of a cardholder's reference photo at the liveness vendor")
    p.add_argument("ssn")
    p.add_argument("photo_ref", nargs="?", help="the photo's id in the vendor's gallery (never the photo)")
    p.add_argument("--clear", action="store_true", help="remove it: no face check for this person until set again")


def add_sandbox_commands(group: Any, add: Callable[..., Any]) -> None:
    """Under `authsvc sandbox`."""
    from authsvc.liveness.sandbox import add_arguments

    p = add(group, "liveness", cmd_sandbox_liveness, "run the liveness vendor sandbox (authsvc/liveness/sandbox.py)")
    add_arguments(p)
