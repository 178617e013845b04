"""Stations: operators, swap and charging stations, connectors, battery packs and their live twins."""
