"""The service's records: SQLAlchemy 2.x typed models and their Alembic migrations."""

from models.access import ApiToken, AuditEvent
from models.base import (
    FAILING_VERDICTS,
    Base,
    IntegrationStatus,
    Outcome,
    Requester,
    RequestState,
    TeamStatus,
    utcnow,
)
from models.history import (
    BaseUrlEvent,
    GuardWindow,
    HeldChange,
    IntegrationMove,
    PlatformHealth,
    SunsetNotice,
    TeamStatusChange,
)
from models.integration import IdempotentCreate, Integration, OrganizationIntegration, Team
from models.validation import (
    ApiProcess,
    HealthCheck,
    RetentionMark,
    ValidationRequest,
    ValidationRun,
)

__all__ = [
    "FAILING_VERDICTS",
    "ApiProcess",
    "ApiToken",
    "AuditEvent",
    "Base",
    "BaseUrlEvent",
    "GuardWindow",
    "HealthCheck",
    "HeldChange",
    "IdempotentCreate",
    "Integration",
    "IntegrationMove",
    "IntegrationStatus",
    "OrganizationIntegration",
    "Outcome",
    "PlatformHealth",
    "RequestState",
    "Requester",
    "RetentionMark",
    "SunsetNotice",
    "Team",
    "TeamStatus",
    "TeamStatusChange",
    "ValidationRequest",
    "ValidationRun",
    "utcnow",
]
