"""Conformance tests reuse the integration fixtures: a real platform on an ephemeral port."""

from tests.integration.conftest import channel, now, running

__all__ = ["channel", "now", "running"]
