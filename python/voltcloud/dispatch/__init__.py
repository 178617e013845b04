"""Dispatch: the mobile workforce (valet specialists, charging vans, engineers) and their tasks."""
