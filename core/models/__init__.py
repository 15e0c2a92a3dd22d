"""The records: the database is the system of record, Redis only a queue (README.md, "Architecture").

One module per concern, each importing only `core.models.base`; this package imports them all,
so that `Base.metadata` holds every table wherever the models are loaded (Alembic, the web
app, the workers, the schema tests).
"""

from core.models.accounts import Role, User
from core.models.bank import BankEntry, BankSource
from core.models.base import Base, new_id, utcnow
from core.models.clients import ApiClient
from core.models.live import LiveSegment, LiveSession, LiveState, LiveVerdict, SegmentState
from core.models.runtime_settings import RuntimeSetting
from core.models.uploads import Analysis, AuditEvent, Decision, ReviewItem, ReviewState, Status, Upload
from core.models.webhooks import DeliveryState, WebhookAttempt, WebhookDelivery

__all__ = [
    "Analysis",
    "ApiClient",
    "AuditEvent",
    "BankEntry",
    "BankSource",
    "Base",
    "Decision",
    "DeliveryState",
    "LiveSegment",
    "LiveSession",
    "LiveState",
    "LiveVerdict",
    "ReviewItem",
    "ReviewState",
    "Role",
    "RuntimeSetting",
    "SegmentState",
    "Status",
    "Upload",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "new_id",
    "utcnow",
]
