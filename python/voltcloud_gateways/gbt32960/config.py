"""The gateway's JSON config (`python -m voltcloud_gateways.gbt32960 --config gateway.json`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voltcloud_gateways.gbt32960.frame import MAX_DATA_LEN


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class GatewayConfig:
    gateway_id: str
    platform: str  # host:port of the platform's IngestService
    token: str
    host: str = "0.0.0.0"
    port: int = 32960
    state_dir: Path = Path("data/gw-gbt32960")
    platform_logins: dict[str, str] = field(default_factory=dict)  # username -> password (command 0x05)
    accept_unknown_vins: bool = False
    vehicles: dict[str, str] = field(default_factory=dict)  # VIN -> vehicle id: overrides the platform's answer
    read_timeout_s: float = 180.0  # silent client: no byte for this long (terminals beat every 10-60 s)
    frame_timeout_s: float = 30.0  # slow client: a started frame not completed within this
    write_timeout_s: float = 10.0
    max_data_len: int = MAX_DATA_LEN
    max_frame_errors: int = 3  # framing errors (garbage, bad BCC, bad length) before the connection is closed
    max_garbage_bytes: int = 64 * 1024  # junk bytes (outside frames) per connection before it is closed
    max_connections: int = 20_000
    flush_interval_s: float = 0.02  # telemetry batching window across connections
    max_batch_readings: int = 20_000
    max_unacked_batches: int = 2  # platform behind by more than this: the batching window stretches ...
    max_flush_wait_s: float = 1.0  # ... up to this (the terminals' answers wait as long)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GatewayConfig:
        for key in ("gateway_id", "platform", "token"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ConfigError(f"config key {key!r} is required (a non-empty string)")
        host, sep, port = str(raw.get("listen", "0.0.0.0:32960")).rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError("config key 'listen' must be host:port")
        logins = raw.get("platform_logins", {})
        vehicles = raw.get("vehicles", {})
        if not _str_map(logins) or not _str_map(vehicles):
            raise ConfigError("'platform_logins' and 'vehicles' must map strings to strings")
        max_data_len = int(raw.get("max_data_len", MAX_DATA_LEN))
        if not 0 < max_data_len <= MAX_DATA_LEN:
            raise ConfigError("'max_data_len' must be within 1..65535")
        optional = {k: raw[k] for k in _OPTIONAL_NUMBERS if k in raw}
        return cls(
            gateway_id=raw["gateway_id"],
            platform=raw["platform"],
            token=raw["token"],
            host=host or "0.0.0.0",
            port=int(port),
            state_dir=Path(raw.get("state_dir", f"data/{raw['gateway_id']}")),
            platform_logins=dict(logins),
            accept_unknown_vins=bool(raw.get("accept_unknown_vins", False)),
            vehicles=dict(vehicles),
            max_data_len=max_data_len,
            **optional,
        )


_OPTIONAL_NUMBERS = (
    "read_timeout_s",
    "frame_timeout_s",
    "write_timeout_s",
    "max_frame_errors",
    "max_garbage_bytes",
    "max_connections",
    "flush_interval_s",
    "max_batch_readings",
    "max_unacked_batches",
    "max_flush_wait_s",
)


def _str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
