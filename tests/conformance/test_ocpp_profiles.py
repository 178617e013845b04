"""OCPP 1.6J RemoteTrigger, LocalAuthListManagement and Core configuration/reset: the central system sends
TriggerMessage, SendLocalList, GetLocalListVersion, Get/ChangeConfiguration, Reset and ClearCache to the real
`ocpp` library's v16 ChargePoint; a triggered StatusNotification reaches the platform's twin."""

from __future__ import annotations

import asyncio
from typing import Any

from ocpp.routing import after, on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    ChargePointErrorCode,
    ChargePointStatus,
    ClearCacheStatus,
    ConfigurationStatus,
    ResetStatus,
    TriggerMessageStatus,
    UpdateStatus,
)

from tests.conformance import test_ocpp16 as base
from voltcloud.api.v1 import common_pb2, stations_pb2
from voltcloud_gateways.ocpp.central import LocalAuth

setup = base.setup  # the platform + gateway fixture of the core conformance test


class ProfileCharger(base.Charger):
    """Keeps a local authorization list and a configuration; answers triggers by sending the message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.local_list: dict[str, dict[str, Any]] = {}
        self.list_version = 0
        self.config = {"HeartbeatInterval": "60", "LocalAuthListEnabled": "true"}
        self.resets: list[str] = []

    @on("TriggerMessage")
    def trigger(self, requested_message: str, connector_id: int | None = None) -> call_result.TriggerMessage:
        self.received.append(("TriggerMessage", {"requested_message": requested_message, "connector_id": connector_id}))
        if requested_message not in ("StatusNotification", "Heartbeat"):
            return call_result.TriggerMessage(status=TriggerMessageStatus.not_implemented)
        return call_result.TriggerMessage(status=TriggerMessageStatus.accepted)

    @after("TriggerMessage")
    async def triggered(self, requested_message: str, connector_id: int | None = None) -> None:
        if requested_message == "StatusNotification":
            await self.call(
                call.StatusNotification(
                    connector_id=connector_id or 1,
                    error_code=ChargePointErrorCode.no_error,
                    status=ChargePointStatus.unavailable,
                )
            )
        elif requested_message == "Heartbeat":
            await self.call(call.Heartbeat())

    @on("SendLocalList")
    def send_local_list(
        self, list_version: int, update_type: str, local_authorization_list: list[dict[str, Any]] | None = None
    ) -> call_result.SendLocalList:
        if update_type == "Differential" and list_version <= self.list_version:
            return call_result.SendLocalList(status=UpdateStatus.version_mismatch)
        if update_type == "Full":
            self.local_list = {}
        for entry in local_authorization_list or []:
            if "id_tag_info" in entry:
                self.local_list[entry["id_tag"]] = entry["id_tag_info"]
            else:
                self.local_list.pop(entry["id_tag"], None)
        self.list_version = list_version
        return call_result.SendLocalList(status=UpdateStatus.accepted)

    @on("GetLocalListVersion")
    def get_local_list_version(self) -> call_result.GetLocalListVersion:
        return call_result.GetLocalListVersion(list_version=self.list_version)

    @on("GetConfiguration")
    def get_configuration(self, key: list[str] | None = None) -> call_result.GetConfiguration:
        wanted = key or sorted(self.config)
        return call_result.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": False, "value": self.config[k]} for k in wanted if k in self.config
            ],
            unknown_key=[k for k in wanted if k not in self.config] or None,
        )

    @on("ChangeConfiguration")
    def change_configuration(self, key: str, value: str) -> call_result.ChangeConfiguration:
        if key not in self.config:
            return call_result.ChangeConfiguration(status=ConfigurationStatus.not_supported)
        self.config[key] = value
        return call_result.ChangeConfiguration(status=ConfigurationStatus.reboot_required)

    @on("Reset")
    def reset(self, type: str) -> call_result.Reset:
        self.resets.append(type)
        return call_result.Reset(status=ResetStatus.accepted)

    @on("ClearCache")
    def clear_cache(self) -> call_result.ClearCache:
        return call_result.ClearCache(status=ClearCacheStatus.accepted)


async def open_profile_charger(s: base.Setup) -> ProfileCharger:
    ws = await base.connect(
        f"{s.url}/{base.CP_ID}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers=base.basic(base.CP_ID, base.PASSWORD),
    )
    charger = ProfileCharger(base.CP_ID, ws)
    s.tasks.append(asyncio.create_task(charger.start()))
    return charger


async def test_remote_trigger_and_local_auth_list(setup: base.Setup) -> None:
    gateway = setup.gateway
    charger = await open_profile_charger(setup)
    await charger.call(call.BootNotification(charge_point_model="VC-1", charge_point_vendor="Volt"))

    # RemoteTrigger: the charger accepts, then sends the StatusNotification, which reaches the twin.
    status, detail = await gateway.trigger_message(base.CP_ID, "StatusNotification", connector_id=1)
    assert status == stations_pb2.COMMAND_STATUS_ACCEPTED, detail
    assert charger.received[-1] == ("TriggerMessage", {"requested_message": "StatusNotification", "connector_id": 1})

    async def unavailable() -> bool:
        return (await base.twin_connector(setup)).status == common_pb2.CONNECTOR_STATUS_UNAVAILABLE

    await base.eventually(unavailable)
    status, detail = await gateway.trigger_message(base.CP_ID, "MeterValues", connector_id=1)
    assert status == stations_pb2.COMMAND_STATUS_NOT_SUPPORTED and "NotImplemented" in detail
    status, detail = await gateway.trigger_message(base.CP_ID, "StartTransaction")
    assert status == stations_pb2.COMMAND_STATUS_REJECTED and "cannot be triggered" in detail

    # LocalAuthListManagement: a full list, then a differential update; versions are tracked per charger.
    assert await gateway.get_local_list_version(base.CP_ID) == (stations_pb2.COMMAND_STATUS_ACCEPTED, 0)
    status, detail = await gateway.send_local_list(
        base.CP_ID, {"TAG-1": LocalAuth(), "TAG-2": LocalAuth("Blocked"), "TAG-3": LocalAuth(parent_id_tag="FLEET")}
    )
    assert status == stations_pb2.COMMAND_STATUS_ACCEPTED and "listVersion 1" in detail, detail
    assert charger.local_list == {
        "TAG-1": {"status": "Accepted"},
        "TAG-2": {"status": "Blocked"},
        "TAG-3": {"status": "Accepted", "parent_id_tag": "FLEET"},
    }
    status, detail = await gateway.send_local_list(base.CP_ID, {"TAG-2": None, "TAG-4": LocalAuth()}, full=False)
    assert status == stations_pb2.COMMAND_STATUS_ACCEPTED, detail
    assert sorted(charger.local_list) == ["TAG-1", "TAG-3", "TAG-4"]
    assert await gateway.get_local_list_version(base.CP_ID) == (stations_pb2.COMMAND_STATUS_ACCEPTED, 2)
    assert gateway.state.local_list_version(base.CP_ID) == 2
    # The charger refuses a stale differential update: REJECTED, our version is not advanced.
    charger.list_version = 10
    status, detail = await gateway.send_local_list(base.CP_ID, {"TAG-5": LocalAuth()}, full=False)
    assert status == stations_pb2.COMMAND_STATUS_REJECTED and "VersionMismatch" in detail
    assert gateway.state.local_list_version(base.CP_ID) == 2
    status, _ = await gateway.send_local_list(base.CP_ID, {"TAG-1": None})
    assert status == stations_pb2.COMMAND_STATUS_REJECTED  # a full list cannot remove


async def test_configuration_reset_and_offline(setup: base.Setup) -> None:
    gateway = setup.gateway
    status, detail = await gateway.reset(base.CP_ID)
    assert status == stations_pb2.COMMAND_STATUS_OFFLINE, detail
    charger = await open_profile_charger(setup)
    await charger.call(call.BootNotification(charge_point_model="VC-1", charge_point_vendor="Volt"))
    status, keys, unknown = await gateway.get_configuration(base.CP_ID, ["HeartbeatInterval", "Nope"])
    assert status == stations_pb2.COMMAND_STATUS_ACCEPTED
    assert keys == [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}] and unknown == ["Nope"]
    status, keys, _ = await gateway.get_configuration(base.CP_ID)
    assert {k["key"] for k in keys} == {"HeartbeatInterval", "LocalAuthListEnabled"}
    status, detail = await gateway.change_configuration(base.CP_ID, "HeartbeatInterval", "30")
    assert status == stations_pb2.COMMAND_STATUS_ACCEPTED and "RebootRequired" in detail
    assert charger.config["HeartbeatInterval"] == "30"
    status, detail = await gateway.change_configuration(base.CP_ID, "Colour", "blue")
    assert status == stations_pb2.COMMAND_STATUS_NOT_SUPPORTED, detail
    assert (await gateway.reset(base.CP_ID, hard=True))[0] == stations_pb2.COMMAND_STATUS_ACCEPTED
    assert (await gateway.clear_cache(base.CP_ID))[0] == stations_pb2.COMMAND_STATUS_ACCEPTED
    assert charger.resets == ["Hard"]
