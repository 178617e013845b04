"""The shared converters for the value messages every room sends: money and positions. Timestamps and durations
are platform.limits (to_timestamp, to_duration, optional_datetime). No rules here: whether an amount or a
currency is allowed is the callee's check (settlement.money), this module only moves fields."""

from __future__ import annotations

from voltcloud.api.v1 import common_pb2


def money_message(amount_minor: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency=currency)


def money_value(message: common_pb2.Money) -> tuple[int, str]:
    """(amount in minor units, currency code) of a Money message."""
    return int(message.amount_minor), str(message.currency)


def lat_lng_message(lat: float, lng: float) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=lat, lng=lng)
