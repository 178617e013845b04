"""Maintenance's public functions for other rooms: raising and clearing alarms."""

from __future__ import annotations

from voltcloud.maintenance.alarms import (
    ALARM_SOURCE_INSPECTION,
    ALARM_SOURCE_PLATFORM,
    ALARM_SOURCE_STATION,
    WORK_ORDER_SOURCE_INSPECTION,
    clear_alarms,
    clear_equipment_alarm,
    raise_alarm,
    raise_alarm_once,
)

__all__ = [
    "ALARM_SOURCE_INSPECTION",
    "ALARM_SOURCE_PLATFORM",
    "ALARM_SOURCE_STATION",
    "WORK_ORDER_SOURCE_INSPECTION",
    "clear_alarms",
    "clear_equipment_alarm",
    "raise_alarm",
    "raise_alarm_once",
]
