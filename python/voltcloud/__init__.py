"""VoltCloud: an open energy-replenishment cloud for electric vehicles."""

__version__ = "0.1.0"
