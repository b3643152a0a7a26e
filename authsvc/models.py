"""Every table of the service, imported in one place so that migrations see them all."""

from authsvc.audit.models import AuditEvent
from authsvc.clients.models import OAuthClient
from authsvc.database import Base
from authsvc.ecard.models import Ecard
from authsvc.liveness.models import LivenessSession
from authsvc.oauth.models import OAuthGrant, RefreshToken
from authsvc.registry.models import Card, Cardholder, Terminal
from authsvc.sessions.models import LogoutDelivery, SsoSession, SsoSessionClient  # noqa: F401 - registered for migrations
from keys.models import KeyRecord
from payments.callbacks.models import PaymentCallback
from payments.ledger.models import LedgerAccount, LedgerEntry, LedgerPosting
from payments.orders.models import PaymentOrder, PaymentRefund
from payments.reconciliation.models import ReconItem, ReconRun  # noqa: F401 - registered for migrations
from payments.withholding.models import (  # noqa: F401 - registered for migrations
    WithholdingAgreement,
    WithholdingBatch,
    WithholdingLine,
)

metadata = Base.metadata

__all__ = [
    "AuditEvent",
    "Card",
    "Cardholder",
    "Ecard",
    "KeyRecord",
    "LedgerAccount",
    "LedgerEntry",
    "LedgerPosting",
    "LivenessSession",
    "OAuthClient",
    "OAuthGrant",
    "PaymentCallback",
    "PaymentOrder",
    "PaymentRefund",
    "RefreshToken",
    "Terminal",
    "metadata",
]
