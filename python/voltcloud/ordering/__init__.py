"""Ordering: one-click power-up quotes, orders and reservations."""
