"""Settings: the one object that reads the environment (`VOLTCLOUD_` prefix) and an optional TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

TracingExporter = Literal["none", "console", "otlp"]


class MethodAdmission(BaseModel):
    """The admission bounds of one RPC method, overriding `rpc_max_running` / `rpc_max_queued` for it."""

    model_config = {"extra": "forbid", "frozen": True}

    max_running: int = Field(gt=0)
    max_queued: int = Field(ge=0)


class Settings(BaseSettings):
    """Platform settings. Precedence: explicit arguments > environment > TOML file > defaults."""

    model_config = SettingsConfigDict(env_prefix="VOLTCLOUD_", extra="forbid")

    listen: str = Field("127.0.0.1:50051", description="HOST:PORT the gRPC server binds; port 0 picks one.")
    data_dir: Path = Field(Path("data"), description="Where the embedded database and the dev key live.")
    database_url: str | None = Field(None, description="SQLAlchemy async URL; default sqlite+aiosqlite in data_dir.")
    jwt_key: str | None = Field(None, description="HS256 signing key; default a dev key in data_dir.")
    jwt_issuer: str = "voltcloud"
    token_ttl_s: int = Field(24 * 3600, gt=0)
    grace_period_s: float = Field(10.0, ge=0, description="How long in-flight calls may finish on shutdown.")
    drain_s: float = Field(
        0.5,
        ge=0,
        description="On shutdown, after health turns NOT_SERVING, calls keep being accepted until none has "
        "been dispatched for this long and none is running (at most half the grace period), so calls already "
        "on the wire are served rather than cancelled.",
    )
    # The edge (docs/security.md): message size and admission of unary calls (platform/rpc.py).
    max_receive_message_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description="Largest request message the server reads; larger ones are refused by gRPC with "
        "RESOURCE_EXHAUSTED before any code runs. 8 MiB: the largest legitimate messages are a gateway's "
        "columnar telemetry batch after a reconnect (up to 200,000 readings, ~2-4 MiB) and an ImportStatement "
        "CSV (at most 4 MiB), with room for framing; gRPC's default 4 MiB would refuse the largest of those.",
    )
    rpc_max_running: int = Field(
        32,
        gt=0,
        description="Unary calls of one method served at once by one worker; more wait in that method's queue "
        "(2 cores, a DB pool of 10). Each method has its own bounds, so a flood of one RPC cannot starve others.",
    )
    rpc_max_queued: int = Field(
        64,
        ge=0,
        description="Unary calls of one method waiting for a slot; beyond this the server answers "
        "RESOURCE_EXHAUSTED at once. Sized so a queued call still starts within a typical 2 s deadline at the "
        "decision path's ~30-60 calls/s.",
    )
    rpc_method_admission: dict[str, MethodAdmission] = Field(
        default_factory=dict,
        description="Per-method overrides of the two bounds above, keyed by the method's name (`QuotePowerUp`) "
        "or full path (`/voltcloud.v1.OrderingService/QuotePowerUp`); in the environment as JSON, e.g. "
        '{"QuotePowerUp": {"max_running": 64, "max_queued": 256}}.',
    )
    rpc_max_concurrent: int = Field(
        2048,
        gt=0,
        description="Calls of every kind (unary and streams: watches, gateway uplinks) one worker holds at once, "
        "gRPC's own `maximum_concurrent_rpcs`: beyond it gRPC answers RESOURCE_EXHAUSTED before any servicer, "
        "admission or authentication runs. A backstop for memory and the event loop, above what the per-method "
        "bounds let in (those shape overload): size it to the streams a worker holds plus a few hundred unary calls.",
    )
    rpc_accept_servers: int = Field(
        1,
        ge=1,
        description="gRPC servers per worker process on the worker's shared port (SO_REUSEPORT; a single-process "
        "`serve` has one). A grpc.aio server takes in one call of a method at a time, a few event-loop turns apart; "
        "more servers take calls in in parallel (each connection stays on one). Measured (docs/benchmarks.md): 4 "
        "beat 1 by far while gRPC's queue was unbounded, and not once `rpc_max_unrequested_s` bounds it.",
    )
    rpc_max_unrequested_s: int = Field(
        1,
        ge=1,
        description="Seconds a call may wait in gRPC's own queue (arrived, not yet taken in by a worker's event "
        "loop) before gRPC drops it (CANCELLED, no Python runs): under overload that queue is first in, first out, "
        "and without this bound a worker takes in only calls that are already (nearly) past their deadline.",
    )
    rpc_deadline_floor_s: float = Field(
        0.01, ge=0, description="A unary call with less time than this left before its deadline is not started."
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="Server processes sharing the port (SO_REUSEPORT), each with its own engine; default one "
        "per CPU (os.cpu_count()), on SQLite too: reads and the engine scale with cores, and SQLite's WAL lets "
        "several processes read while it serialises their writes (busy timeout 5 s) exactly as it does for the "
        "connections of one process. 1 serves from a single process without a supervisor.",
    )
    tracing_exporter: TracingExporter = "none"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    metrics_interval_ms: int = Field(60_000, gt=0, description="How often metrics are exported.")
    service_name: str = "voltcloud"
    seed_demo: bool = Field(False, description="Seed the demo world when the database is empty.")
    demo_seed: int = 7
    log_level: str = "INFO"
    db_pool_size: int = Field(10, gt=0)
    # Ordering and dispatch (docs/ordering.md).
    quote_ttl_s: int = Field(120, gt=0, description="How long a power-up quote can be ordered.")
    service_radius_m: float = Field(50_000.0, gt=0, description="A position with no resource this close is refused.")
    hold_margin_permille: int = Field(1200, ge=1000, description="Hold = estimate x margin / 1000.")
    order_grace_s: int = Field(1800, gt=0, description="An order not in service by ETA + grace expires.")
    cancel_fee_minor: int = Field(1000, ge=0, description="Fee for cancelling once the specialist is en route.")
    reservation_no_show_s: int = Field(600, gt=0, description="A reservation unused this long after start expires.")
    dispatch_offer_timeout_s: float = Field(30.0, gt=0, description="How long a specialist has to accept.")
    dispatch_max_offers: int = Field(5, gt=0, description="Offers per task before the order fails.")
    reoptimize_interval_s: float = Field(60.0, ge=0, description="Batch re-optimisation period; 0 = off.")
    engine_reconcile_interval_s: float = Field(
        600.0,
        ge=0,
        description="Period of the engine's slow reconciliation with the database (repairs what the change feed "
        "could not bring, e.g. a change older than the feed's retention); 0 = off. The feed keeps it current.",
    )
    engine_rebuild_debounce_s: float = Field(
        1.0, ge=0, description="A structural change the engine cannot apply in place rebuilds it after this delay."
    )
    # Maintenance field work (docs/maintenance-field.md).
    engineer_offer_timeout_s: float = Field(300.0, gt=0, description="How long an engineer has to accept a work order.")
    maintenance_field_sweep_s: float = Field(
        5.0,
        ge=0,
        description="Least time between two sweeps of engineer offer timeouts, certificate-expiry reminders and "
        "the battery risk rules, which run when an offer or a certificate stage falls due or a pack or engineer "
        "changes (at least every `sweep_idle_s`); 0 = off.",
    )
    engineer_autodispatch_s: float = Field(
        0.0,
        ge=0,
        description="Period of automatic dispatch of OPEN work orders to engineers; 0 = off (operators "
        "assign with AssignWorkOrder / PlanDispatch).",
    )
    sweep_interval_s: float = Field(
        1.0,
        gt=0,
        description="Shortest pause between two expiry and offer-timeout sweeps. The sweeps run when the earliest "
        "offer, order or reservation falls due (and when the change feed announces a new one), not on a timer.",
    )
    sweep_idle_s: float = Field(
        30.0,
        gt=0,
        description="Longest pause between two sweeps: the safety net for a deadline no change announced (a "
        "reservation that holds no connector, a clock stepped forward).",
    )
    # Settlement (docs/settlement.md).
    settlement_scheduler_interval_s: float = Field(
        60.0, ge=0, description="Period of hold expiry, T+3 payouts and monthly bills; 0 = off."
    )
    settlement_timezone: str = Field("Asia/Shanghai", description="Local time of payouts and of fleet/driver bills.")
    # Vehicle telemetry (docs/telemetry.md): remediation thresholds and the alerts' defaults (a fleet may set its
    # own limits; these apply where it has not).
    telemetry_spike_soc_permille: int = Field(
        400, gt=0, description="A SOC jump above this (permille) within the window is a spike."
    )
    telemetry_spike_soc_window_s: float = Field(
        10.0, gt=0, description="The SOC spike window: time since the last accepted SOC."
    )
    telemetry_spike_position_m: float = Field(
        200_000.0, gt=0, description="A position jump above this (m) within the window is a spike."
    )
    telemetry_spike_position_window_s: float = Field(
        60.0, gt=0, description="The position spike window: time since the last accepted position."
    )
    telemetry_gap_s: float = Field(300.0, gt=0, description="No reading for longer than this: the next is a gap.")
    telemetry_stuck_s: float = Field(
        300.0, gt=0, description="Odometer unchanged this long while the speed says the vehicle moves: stuck."
    )
    telemetry_interpolate_max_s: float = Field(
        30.0, gt=0, description="A spike is interpolated only between neighbours at most this far apart."
    )
    telemetry_speed_limit_m_per_h: int = Field(120_000, gt=0, description="Default speeding limit, m/h.")
    telemetry_fatigue_drive_s: float = Field(4 * 3600.0, gt=0, description="Default continuous driving limit.")
    telemetry_fatigue_rest_s: float = Field(20 * 60.0, gt=0, description="A stop this long is a rest.")
    telemetry_low_soc_permille: int = Field(150, ge=0, le=1000, description="Default low-battery threshold.")
    # Maintenance (docs/maintenance.md): alarm flapping, the SLA timer and the notifier's channels.
    maintenance_flap_threshold: int = Field(
        3, gt=0, description="An alarm raised more than this many times within the flap window is flapping."
    )
    maintenance_flap_window_s: int = Field(3600, gt=0, description="The flapping window of an alarm, seconds.")
    maintenance_risk_recurrence_count: int = Field(
        3,
        ge=0,
        description="Risk rule: the same fault on the same equipment this many times opens preventive work (0 = off).",
    )
    maintenance_risk_recurrence_window_s: int = Field(
        7 * 86400, gt=0, description="Risk rule: the window the recurrences are counted in, seconds."
    )
    maintenance_risk_soh_months: int = Field(
        3, ge=0, description="Risk rule: a pack whose fitted SOH reaches retirement within this many months (0 = off)."
    )
    maintenance_timers: bool = Field(True, description="Run the SLA timer and the notification sender here.")
    smtp_host: str = Field("", description="SMTP server for email notifications; empty = no email channel.")
    smtp_port: int = Field(25, gt=0, lt=65536)
    smtp_sender: str = Field("voltcloud@localhost", description="From address of notification emails.")
    smtp_username: str = Field("", description="SMTP login; empty = no AUTH.")
    smtp_password: str = ""
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    notify_webhooks: bool = Field(True, description="Deliver to recipients' webhook URLs (HTTP POST).")
    sms_provider: str = Field(
        "",
        description="`module:factory` returning a voltcloud.maintenance.notify.SmsProvider (called with the "
        "settings); empty = no SMS channel (progress goes by email then).",
    )
    notify_max_attempts: int = Field(6, gt=0, description="Delivery attempts of a notification before it fails.")
    notify_backoff_s: float = Field(30.0, gt=0, description="First retry delay; doubles per attempt, at most 1 h.")

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"listen must be HOST:PORT, got {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file path itself comes from the environment, the only bootstrap exception.
        toml_file = os.environ.get("VOLTCLOUD_CONFIG_FILE")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def resolved_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'voltcloud.db').resolve()}"
