"""End-to-end tests use the integration suite's platform fixtures (one in-process server, one channel)."""

from tests.integration.conftest import channel, running

__all__ = ["channel", "running"]
