"""Conformance tests reuse the integration fixtures: a real platform on an ephemeral port."""

from tests.integration.conftest import channel, now, running
from tests.stationkit import no_stray_tasks

__all__ = ["channel", "no_stray_tasks", "now", "running"]
