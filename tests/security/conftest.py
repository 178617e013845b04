"""Security tests run a real platform over real gRPC channels: the integration fixtures, re-exported."""

from __future__ import annotations

from tests.integration.conftest import (
    JWT_KEY,
    RunningPlatform,
    channel,
    channel_to,
    now,
    platform_settings,
    running,
    serving,
)

__all__ = [
    "JWT_KEY",
    "RunningPlatform",
    "channel",
    "channel_to",
    "now",
    "platform_settings",
    "running",
    "serving",
]
