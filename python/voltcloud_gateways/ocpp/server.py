"""Thin WebSocket transport of the OCPP 1.6J central system: `ws://host:port/<prefix>/<chargePointId>`,
subprotocol `ocpp1.6`, HTTP Basic auth per charge point (security profile 1; profile 2 is the same behind
TLS), a maximum frame size. Everything a charge point reports is written to the uplink outbox before the
charge point gets its answer, so an accepted message is never lost; when the outbox is full the charger
gets an InternalError and retries. Platform commands arrive through the uplink and become CALLs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import http
import itertools
import logging
from collections.abc import Iterable
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from voltcloud.api.v1 import ingest_pb2, stations_pb2
from voltcloud_gateways.ocpp import codec
from voltcloud_gateways.ocpp.authorize import ACCEPTED, Authorizer, IdTagInfo
from voltcloud_gateways.ocpp.central import (
    AUTHORIZED_ACTIONS,
    ChargePointConfig,
    ChargePointSession,
    CommandError,
    LocalAuth,
    OcppState,
    OutgoingCall,
    command_calls,
    result_status,
    send_local_list,
    trigger_message,
)
from voltcloud_gateways.uplink import BufferFull, UplinkClient

log = logging.getLogger(__name__)
SUBPROTOCOL = "ocpp1.6"


class Connection:
    """One connected charge point: a receive loop and at most one outstanding CALL of ours."""

    def __init__(self, gateway: OcppGateway, ws: ServerConnection, session: ChargePointSession) -> None:
        self.gateway = gateway
        self.ws = ws
        self.session = session
        self.cp_id = session.config.charge_point_id
        self._call_lock = asyncio.Lock()
        self._pending: tuple[str, str, asyncio.Future[codec.CallResult | codec.CallError]] | None = None
        self._ids = itertools.count(1)

    async def serve(self) -> None:
        async for data in self.ws:
            reply = await self.on_frame(data)
            if reply is not None:
                await self.ws.send(reply)

    async def on_frame(self, data: str | bytes) -> str | None:
        frame = self.gateway.codec.parse(data)
        self.gateway.frames += 1
        if isinstance(frame, codec.FrameError):
            log.info("%s: %s %s", self.cp_id, frame.code, frame.description)
            return frame.encode()
        if isinstance(frame, codec.Call):
            return await self.on_call(frame)
        pending = self._pending
        if pending is None or pending[0] != frame.unique_id:
            log.info("%s: unexpected answer %s", self.cp_id, frame.unique_id)
            return None
        if not pending[2].done():
            pending[2].set_result(frame)
        return None

    async def on_call(self, frame: codec.Call) -> str:
        try:
            auth = await self.authorization(frame)
            answer = self.session.handle(frame.action, frame.payload, auth)
        except (KeyError, ValueError, TypeError) as error:
            return codec.encode_error(frame.unique_id, codec.PROPERTY_CONSTRAINT_VIOLATION, str(error))
        try:
            for item in answer.uplink:
                if isinstance(item, ingest_pb2.TelemetryBatch):
                    self.gateway.uplink.publish_telemetry(item)
                else:
                    self.gateway.uplink.publish_event(item)
        except BufferFull as error:
            return codec.encode_error(frame.unique_id, codec.INTERNAL_ERROR, f"platform unreachable: {error}")
        return codec.encode_result(frame.unique_id, answer.payload)

    async def authorization(self, frame: codec.Call) -> IdTagInfo | None:
        """The platform's verdict on the frame's idTag (Authorize, StartTransaction); None when none is needed."""
        if frame.action not in AUTHORIZED_ACTIONS:
            return None
        id_tag = self.session.tag_to_authorize(frame.action, frame.payload)
        if id_tag is None:
            return ACCEPTED  # a start the platform itself asked for (RemoteStartTransaction for an order)
        config = self.session.config
        return await self.gateway.authorizer.check(config.charge_point_id, config.station_id, id_tag)

    async def call(self, action: str, payload: dict[str, Any], wait_s: float) -> codec.CallResult | codec.CallError:
        async with self._call_lock:
            unique_id = f"cs-{next(self._ids)}"
            text = codec.encode_call(unique_id, action, payload)
            future: asyncio.Future[codec.CallResult | codec.CallError] = asyncio.get_running_loop().create_future()
            self._pending = (unique_id, action, future)
            try:
                await self.ws.send(text)
                return await asyncio.wait_for(future, wait_s)
            finally:
                self._pending = None


class OcppGateway:
    def __init__(
        self,
        uplink: UplinkClient,
        charge_points: Iterable[ChargePointConfig],
        state: OcppState,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path_prefix: str = "/ocpp",
        max_frame_bytes: int = codec.DEFAULT_MAX_FRAME_BYTES,
        heartbeat_interval_s: int = 60,
        call_timeout_s: float = 30.0,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.uplink = uplink
        # By default idTags are judged by the platform the uplink reaches, with the uplink's credentials.
        self.authorizer = authorizer or Authorizer(uplink.target, uplink._metadata, uplink.gateway_id, state)
        self.charge_points = {cp.charge_point_id: cp for cp in charge_points}
        self.state = state
        self.host, self.port = host, port
        self.path_prefix = path_prefix.rstrip("/")
        self.codec = codec.Codec(max_frame_bytes=max_frame_bytes)
        self.max_frame_bytes = max_frame_bytes
        self.heartbeat_interval_s = heartbeat_interval_s
        self.call_timeout_s = call_timeout_s
        self.connections: dict[str, Connection] = {}
        self.sessions: dict[str, ChargePointSession] = {}
        self.frames = 0
        self._server: Server | None = None
        uplink.on_command = self.on_command

    @property
    def station_ids(self) -> list[str]:
        return sorted({cp.station_id for cp in self.charge_points.values()})

    async def start(self) -> int:
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
            process_request=self._process_request,
            max_size=self.max_frame_bytes,
            compression=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.authorizer.close()

    def _charge_point_id(self, path: str) -> str:
        path = path.split("?", 1)[0]
        if not path.startswith(self.path_prefix + "/"):
            return ""
        return path[len(self.path_prefix) + 1 :].strip("/").split("/")[-1]

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = self._charge_point_id(request.path)
        config = self.charge_points.get(cp_id)
        if config is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "unknown charge point\n")
        offered = [p.strip() for h in request.headers.get_all("Sec-WebSocket-Protocol") for p in h.split(",")]
        if SUBPROTOCOL not in offered:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, "subprotocol ocpp1.6 required\n")
        if not self._authorized(config, request.headers):
            response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "wrong or missing credentials\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
            return response
        return None

    @staticmethod
    def _authorized(config: ChargePointConfig, headers: Headers) -> bool:
        value = headers.get("Authorization", "")
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and user == config.charge_point_id and config.check_password(password)

    async def _handler(self, ws: ServerConnection) -> None:
        cp_id = self._charge_point_id(ws.request.path if ws.request else "")
        config = self.charge_points[cp_id]
        session = self.sessions.get(cp_id)
        if session is None:
            session = self.sessions[cp_id] = ChargePointSession(
                config, self.state, heartbeat_interval_s=self.heartbeat_interval_s
            )
        previous = self.connections.get(cp_id)
        if previous is not None:
            await previous.ws.close(1000, "replaced by a new connection")
        connection = self.connections[cp_id] = Connection(self, ws, session)
        log.info("charge point %s connected", cp_id)
        try:
            await connection.serve()
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.connections.get(cp_id) is connection:
                del self.connections[cp_id]
            log.info("charge point %s disconnected", cp_id)

    # ---- commands from the platform ----

    async def on_command(self, command: ingest_pb2.Command) -> stations_pb2.StationCommandResult:
        chargers = [cp for cp in self.charge_points.values() if cp.station_id == command.station_id]
        try:
            calls = command_calls(command, chargers, self.state, self.sessions)
        except CommandError as error:
            return stations_pb2.StationCommandResult(status=error.status, detail=error.detail)  # type: ignore[arg-type]
        timeout = self.call_timeout_s
        if command.HasField("deadline"):
            remaining = (command.deadline.ToDatetime(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)).total_seconds()
            timeout = max(0.1, min(timeout, remaining))
        results = await asyncio.gather(*(self._send(call, timeout) for call in calls))
        for status, detail in results:
            if status != stations_pb2.COMMAND_STATUS_ACCEPTED:
                return stations_pb2.StationCommandResult(status=status, detail=detail)  # type: ignore[arg-type]
        return stations_pb2.StationCommandResult(
            status=stations_pb2.COMMAND_STATUS_ACCEPTED, detail="; ".join(d for _, d in results)
        )

    async def _send(self, call: OutgoingCall, wait_s: float) -> tuple[int, str]:
        status, detail, _ = await self.call_charge_point(call.charge_point_id, call.action, call.payload, wait_s)
        return status, detail

    async def call_charge_point(
        self, cp_id: str, action: str, payload: dict[str, Any], wait_s: float | None = None
    ) -> tuple[int, str, dict[str, Any]]:
        """Sends one CSMS CALL and checks the answer against its schema: (CommandStatus, detail, answer)."""
        wait_s = self.call_timeout_s if wait_s is None else wait_s
        connection = self.connections.get(cp_id)
        if connection is None:
            return stations_pb2.COMMAND_STATUS_OFFLINE, f"charge point {cp_id} not connected", {}
        try:
            answer = await connection.call(action, payload, wait_s)
        except TimeoutError:
            return stations_pb2.COMMAND_STATUS_TIMEOUT, f"{action}: no answer within {wait_s:g}s", {}
        except (websockets.ConnectionClosed, ValueError) as error:
            return stations_pb2.COMMAND_STATUS_FAILED, f"{action}: {error}", {}
        if isinstance(answer, codec.CallError):
            return stations_pb2.COMMAND_STATUS_FAILED, f"{action}: {answer.code}: {answer.description}", {}
        violation = self.codec.validate_result(action, answer.payload)
        if violation is not None:
            return stations_pb2.COMMAND_STATUS_FAILED, f"{action}: invalid answer: {violation[1]}", {}
        if "status" not in answer.payload:
            return stations_pb2.COMMAND_STATUS_ACCEPTED, action, answer.payload
        status, detail = result_status(answer.payload)
        return status, f"{action}: {detail}", answer.payload

    # ---- RemoteTrigger, LocalAuthListManagement, configuration and reset (gateway operations) ----

    async def trigger_message(self, cp_id: str, requested: str, connector_id: int | None = None) -> tuple[int, str]:
        """Asks the charge point to send `requested` (StatusNotification, MeterValues, Heartbeat, ...) now; the
        message itself then arrives as an ordinary CALL and goes up the uplink."""
        try:
            payload = trigger_message(requested, connector_id)
        except CommandError as error:
            return error.status, error.detail
        status, detail, _ = await self.call_charge_point(cp_id, "TriggerMessage", payload)
        return status, detail

    async def send_local_list(
        self, cp_id: str, entries: dict[str, LocalAuth | None], *, full: bool = True
    ) -> tuple[int, str]:
        """Sends the charge point's local authorization list (full, or a differential update) under the next
        list version; the version is remembered only when the charge point accepts it."""
        version = self.state.local_list_version(cp_id) + 1
        try:
            payload = send_local_list(version, entries, full=full)
        except CommandError as error:
            return error.status, error.detail
        status, detail, _ = await self.call_charge_point(cp_id, "SendLocalList", payload)
        if status == stations_pb2.COMMAND_STATUS_ACCEPTED:
            self.state.set_local_list_version(cp_id, version)
            self.state.store_local_list(cp_id, entries, full=full)  # the offline fallback of idTag checks
        return status, f"{detail} (listVersion {version})"

    async def get_local_list_version(self, cp_id: str) -> tuple[int, int]:
        """(CommandStatus, the charge point's list version: -1 not supported, 0 no list)."""
        status, _, answer = await self.call_charge_point(cp_id, "GetLocalListVersion", {})
        return status, int(answer.get("listVersion", -1))

    async def get_configuration(
        self, cp_id: str, keys: Iterable[str] = ()
    ) -> tuple[int, list[dict[str, Any]], list[str]]:
        """(CommandStatus, configurationKey entries, unknownKey) of GetConfiguration (all keys when empty)."""
        wanted = list(keys)
        status, _, answer = await self.call_charge_point(cp_id, "GetConfiguration", {"key": wanted} if wanted else {})
        return status, list(answer.get("configurationKey", [])), list(answer.get("unknownKey", []))

    async def change_configuration(self, cp_id: str, key: str, value: str) -> tuple[int, str]:
        """ChangeConfiguration; RebootRequired counts as accepted (the detail says so)."""
        status, detail, _ = await self.call_charge_point(cp_id, "ChangeConfiguration", {"key": key, "value": value})
        return status, detail

    async def reset(self, cp_id: str, *, hard: bool = False) -> tuple[int, str]:
        status, detail, _ = await self.call_charge_point(cp_id, "Reset", {"type": "Hard" if hard else "Soft"})
        return status, detail

    async def clear_cache(self, cp_id: str) -> tuple[int, str]:
        status, detail, _ = await self.call_charge_point(cp_id, "ClearCache", {})
        return status, detail


async def run_gateway(gateway: OcppGateway) -> None:
    """Starts the uplink and the WebSocket server and serves until cancelled."""
    gateway.uplink.start()
    await gateway.start()
    try:
        await asyncio.Future()
    finally:
        await gateway.stop()
        with contextlib.suppress(Exception):
            await gateway.uplink.stop()
