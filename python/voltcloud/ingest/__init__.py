"""Ingest: the gateways' uplink (sequence numbers, acks, de-duplication) and the command downlink."""
