"""Swap-station uplink: MQTT (codec + gateway) and, later, a Modbus TCP rack poller."""
