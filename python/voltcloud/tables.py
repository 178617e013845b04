"""Imports every domain's tables so `SQLModel.metadata` is complete (for migrations and test schemas)."""

from sqlmodel import SQLModel

from voltcloud.dispatch import models as dispatch_models
from voltcloud.fleet import models as fleet_models
from voltcloud.stations import models as station_models

metadata = SQLModel.metadata

__all__ = ["dispatch_models", "fleet_models", "metadata", "station_models"]
