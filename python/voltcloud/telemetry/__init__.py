"""Vehicle telemetry: the reading history, live vehicle state, remediation and driving alerts (issue 13)."""
