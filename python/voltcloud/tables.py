"""Imports every domain's tables so `SQLModel.metadata` is complete (for migrations and test schemas)."""

from sqlmodel import SQLModel

from voltcloud.dispatch import models as dispatch_models
from voltcloud.fleet import models as fleet_models
from voltcloud.ingest import models as ingest_models
from voltcloud.maintenance import field_models as maintenance_field_models
from voltcloud.maintenance import models as maintenance_models
from voltcloud.ordering import models as ordering_models
from voltcloud.platform import feed as feed_models
from voltcloud.platform import idempotency as idempotency_models
from voltcloud.settlement import models as settlement_models
from voltcloud.stations import models as station_models
from voltcloud.stations import token_models
from voltcloud.telemetry import models as telemetry_models

metadata = SQLModel.metadata

__all__ = [
    "dispatch_models",
    "feed_models",
    "fleet_models",
    "idempotency_models",
    "ingest_models",
    "maintenance_field_models",
    "maintenance_models",
    "metadata",
    "ordering_models",
    "settlement_models",
    "station_models",
    "telemetry_models",
    "token_models",
]
