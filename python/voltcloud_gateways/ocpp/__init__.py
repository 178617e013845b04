"""OCPP 1.6J central system: sans-IO codec (`codec`), central-system behaviour (`central`), WebSocket
transport (`server`). Run with `python -m voltcloud_gateways.ocpp --config gateway.json`."""
