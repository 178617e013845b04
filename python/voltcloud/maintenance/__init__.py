"""Maintenance: alarms, fault work orders and battery health."""
