"""Helpers of the maintenance field tests (issue 14, maint-field): tokens, stubs and the demo world's rows."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import timestamp_pb2
from sqlmodel import col, select

from voltcloud.api.v1 import common_pb2, maintenance_pb2, maintenance_pb2_grpc
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform
from voltcloud.stations.models import Station

Metadata = tuple[tuple[str, str], ...]
OP, OTHER = "op-0001", "op-0002"


def md(platform: Platform, subject: str, role: Role, operator_id: str | None = OP) -> Metadata:
    tenant = Tenant("operator", operator_id) if operator_id and role is not Role.PLATFORM_ADMIN else None
    return (("authorization", f"Bearer {platform.tokens.mint(subject, role, tenant)}"),)


def operator(platform: Platform, operator_id: str = OP) -> Metadata:
    return md(platform, f"boss-of-{operator_id}", Role.OPERATOR, operator_id)


def stub(channel: grpc.aio.Channel) -> maintenance_pb2_grpc.MaintenanceServiceStub:
    return maintenance_pb2_grpc.MaintenanceServiceStub(channel)


def ts(when: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def latlng(lat: float, lng: float) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=lat, lng=lng)


async def stations_of(platform: Platform, operator_id: str = OP, kind: int | None = None) -> list[Station]:
    async with platform.db.transaction() as session:
        query = select(Station).where(Station.operator_id == operator_id).order_by(col(Station.id))
        if kind is not None:
            query = query.where(Station.kind == kind)
        return list(await session.exec(query))


async def register(
    api: maintenance_pb2_grpc.MaintenanceServiceStub,
    meta: Metadata,
    key: str,
    *,
    name: str,
    at: tuple[float, float],
    skills: tuple[str, ...] = ("hv",),
    operator_id: str = OP,
) -> maintenance_pb2.Engineer:
    reply = await api.RegisterEngineer(
        maintenance_pb2.RegisterEngineerRequest(
            idempotency_key=key,
            engineer=maintenance_pb2.Engineer(
                name=name,
                phone="+8613800000000",
                email=f"{name.lower()}@example.com",
                skills=list(skills),
                operator_id=operator_id,
                home_position=latlng(*at),
            ),
        ),
        metadata=meta,
    )
    return reply.engineer


async def certify(
    api: maintenance_pb2_grpc.MaintenanceServiceStub,
    meta: Metadata,
    key: str,
    engineer_id: str,
    *,
    kind: str = "hv",
    issued: dt.datetime,
    expires: dt.datetime,
) -> maintenance_pb2.Certificate:
    reply = await api.AddCertificate(
        maintenance_pb2.AddCertificateRequest(
            idempotency_key=key,
            certificate=maintenance_pb2.Certificate(
                engineer_id=engineer_id, kind=kind, number=f"N-{key}", issue_time=ts(issued), expire_time=ts(expires)
            ),
        ),
        metadata=meta,
    )
    return reply.certificate
