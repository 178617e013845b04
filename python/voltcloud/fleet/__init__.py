"""Fleets: enterprise customers, sub-fleets, vehicles and drivers."""
