"""Issue 9, findings 2, 3 and 6 over real gRPC (SQLite + PostgreSQL): money only from accounts the caller may
spend, orders only on vehicles the caller may order for, accounts only for owners inside the caller's tenant.

Every refusal asserts that nothing moved: balance and held amount of every victim account before and after,
and no order, hold or reservation left behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
from sqlmodel import col, func, select

from tests.integration.conftest import RunningPlatform
from tests.integration.powerup_support import account_state, candidates, driver_md, fund, inventory_quote
from voltcloud.api.v1 import common_pb2, ordering_pb2, ordering_pb2_grpc, settlement_pb2, settlement_pb2_grpc
from voltcloud.fleet.models import Driver, SubFleet, Vehicle
from voltcloud.ordering.models import Order, Reservation
from voltcloud.ordering.states import Mode
from voltcloud.platform.auth import Role, Tenant
from voltcloud.server import Platform
from voltcloud.settlement.models import LedgerAccount, LedgerHold
from voltcloud.stations.models import MobileUnit

Metadata = tuple[tuple[str, str], ...]


def md_of(platform: Platform, subject: str, role: Role, tenant: Tenant | None = None) -> Metadata:
    return (("authorization", f"Bearer {platform.tokens.mint(subject, role, tenant)}"),)


@dataclass(frozen=True)
class World:
    """Two fleets with a vehicle, a member driver and a funded account each, and two private cars with
    their registered drivers, all from the demo seed."""

    fleet_a: str
    fleet_b: str
    vehicle_a: Vehicle
    driver_a: str  # a driver of fleet A (by the driver table)
    driver_b: str  # a driver of fleet B
    private_x: Vehicle
    owner_x: str
    private_y: Vehicle
    owner_y: str
    account_a: str
    account_b: str
    wallet_x: str
    wallet_y: str


async def _world(platform: Platform) -> World:
    async with platform.db.transaction() as session:
        vehicle_a = (
            await session.exec(
                select(Vehicle)
                .where(col(Vehicle.fleet_id).is_not(None), col(Vehicle.pack_type_id).is_not(None))
                .order_by(col(Vehicle.id))
            )
        ).first()
        assert vehicle_a is not None and vehicle_a.fleet_id is not None
        fleet_a = vehicle_a.fleet_id
        drivers = list(await session.exec(select(Driver).where(col(Driver.fleet_id).is_not(None))))
        driver_a = next(d.id for d in drivers if d.fleet_id == fleet_a)
        other = next(d for d in drivers if d.fleet_id != fleet_a)
        assert other.fleet_id is not None
        # A private car's registered driver: the seed's one driver of that car.
        private = list(
            await session.exec(
                select(Vehicle, Driver)
                .where(
                    col(Driver.vehicle_id) == col(Vehicle.id),
                    col(Vehicle.fleet_id).is_(None),
                    col(Vehicle.pack_type_id).is_not(None),
                )
                .order_by(col(Vehicle.id))
                .limit(2)
            )
        )
    (private_x, owner_x), (private_y, owner_y) = private
    return World(
        fleet_a=fleet_a,
        fleet_b=other.fleet_id,
        vehicle_a=vehicle_a,
        driver_a=driver_a,
        driver_b=other.id,
        private_x=private_x,
        owner_x=owner_x.id,
        private_y=private_y,
        owner_y=owner_y.id,
        account_a=await fund(platform, "fleet", fleet_a),
        account_b=await fund(platform, "fleet", other.fleet_id),
        wallet_x=await fund(platform, "driver", owner_x.id),
        wallet_y=await fund(platform, "driver", owner_y.id),
    )


async def _states(platform: Platform, accounts: list[str]) -> dict[str, tuple[int, int]]:
    return {a: await account_state(platform, a) for a in accounts}


async def _left_behind(platform: Platform) -> tuple[int, int, int]:
    """(orders, reservations, holds) in the whole database."""
    async with platform.db.transaction() as session:
        orders = (await session.exec(select(func.count()).select_from(Order))).one()
        reservations = (await session.exec(select(func.count()).select_from(Reservation))).one()
        holds = (await session.exec(select(func.count()).select_from(LedgerHold))).one()
    return int(orders), int(reservations), int(holds)


async def _refused(call: object, expected: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == expected, err.value.details()


def _create(quote_id: str, key: str, payer: str = "") -> ordering_pb2.CreateOrderRequest:
    request = ordering_pb2.CreateOrderRequest(idempotency_key=key, quote_id=quote_id, option_id="o1")
    if payer:
        request.payer.CopyFrom(common_pb2.Payer(account_id=payer))
    return request


def _quote_request(platform: Platform, vehicle: Vehicle) -> ordering_pb2.QuotePowerUpRequest:
    station = next(iter(platform.powerup.engine._maps.station_by_id.values()))
    return ordering_pb2.QuotePowerUpRequest(
        vehicle_id=vehicle.id,
        position=common_pb2.LatLng(lat=station.lat + 0.005, lng=station.lng),
        soc_permille=200,
        target_soc_permille=800,
    )


# --- finding 2: the payer ------------------------------------------------------------------------------------


async def test_fleet_manager_cannot_pay_with_another_fleets_account_or_a_drivers_wallet(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform = running.platform
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    w = await _world(platform)
    manager = md_of(platform, "fm-a", Role.FLEET_MANAGER, Tenant("fleet", w.fleet_a))
    option = candidates(platform, w.vehicle_a, Mode.CHARGE)[0]
    quote_id = await inventory_quote(platform, "fm-a", w.vehicle_a, [option])
    victims = [w.account_b, w.wallet_x]
    before, rows_before = await _states(platform, victims), await _left_behind(platform)

    for i, victim in enumerate(victims):
        await _refused(ordering.CreateOrder(_create(quote_id, f"steal-{i}", victim), metadata=manager),
                       grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip
    # The same with a quote that does not exist: the payer is refused first, whatever else is wrong.
    await _refused(ordering.CreateOrder(_create("qt-none", "steal-x", w.account_b), metadata=manager),
                   grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip

    assert await _states(platform, victims) == before
    assert await _left_behind(platform) == rows_before
    # The fleet's own account still pays (named explicitly, or by default).
    own = await ordering.CreateOrder(_create(quote_id, "own", w.account_a), metadata=manager)
    assert own.order.payer.account_id == w.account_a
    assert (await account_state(platform, w.account_a))[1] > 0


async def test_cancellation_fee_never_hits_a_driver_who_did_nothing(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    """The reported attack: a fleet manager names a driver's wallet, the order goes en route, the manager
    cancels and the fee is captured from the driver. Now the order is refused and the wallet untouched."""
    platform = running.platform
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    w = await _world(platform)
    manager = md_of(platform, "fm-a", Role.FLEET_MANAGER, Tenant("fleet", w.fleet_a))
    option = candidates(platform, w.vehicle_a, Mode.CHARGE)[0]
    quote_id = await inventory_quote(platform, "fm-a", w.vehicle_a, [option])
    before = await account_state(platform, w.wallet_x)
    try:
        created = await ordering.CreateOrder(_create(quote_id, "fee", w.wallet_x), metadata=manager)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    else:
        await ordering.CancelOrder(
            ordering_pb2.CancelOrderRequest(order_id=created.order.order_id, idempotency_key="c"), metadata=manager
        )
    assert await account_state(platform, w.wallet_x) == before


async def test_operator_may_neither_order_for_a_fleet_nor_spend_its_money(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform = running.platform
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    w = await _world(platform)
    option = candidates(platform, w.vehicle_a, Mode.CHARGE)[0]
    operator = md_of(platform, "op-user", Role.OPERATOR, Tenant("operator", option.operator_id))
    victims = [w.account_a, w.account_b, w.wallet_x]
    before, rows_before = await _states(platform, victims), await _left_behind(platform)

    await _refused(ordering.QuotePowerUp(_quote_request(platform, w.vehicle_a), metadata=operator),
                   grpc.StatusCode.NOT_FOUND)  # fmt: skip
    quote_id = await inventory_quote(platform, "op-user", w.vehicle_a, [option])
    await _refused(ordering.CreateOrder(_create(quote_id, "k1"), metadata=operator), grpc.StatusCode.NOT_FOUND)
    for i, victim in enumerate(victims):
        await _refused(ordering.CreateOrder(_create(quote_id, f"p{i}", victim), metadata=operator),
                       grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip

    assert await _states(platform, victims) == before
    assert await _left_behind(platform) == rows_before


async def test_operator_cancelling_charges_the_customer_no_fee(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform = running.platform
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    w = await _world(platform)
    manager = md_of(platform, "fm-a", Role.FLEET_MANAGER, Tenant("fleet", w.fleet_a))
    option = candidates(platform, w.vehicle_a, Mode.CHARGE)[0]
    quote_id = await inventory_quote(platform, "fm-a", w.vehicle_a, [option])
    created = await ordering.CreateOrder(_create(quote_id, "k"), metadata=manager)
    assert created.order.state == common_pb2.ORDER_STATE_EN_ROUTE  # past dispatch: a customer would pay a fee
    balance_before = (await account_state(platform, w.account_a))[0]
    operator = md_of(platform, "op-user", Role.OPERATOR, Tenant("operator", option.operator_id))
    cancelled = await ordering.CancelOrder(
        ordering_pb2.CancelOrderRequest(order_id=created.order.order_id, idempotency_key="c", reason="fault"),
        metadata=operator,
    )
    assert cancelled.cancellation_fee.amount_minor == 0
    assert await account_state(platform, w.account_a) == (balance_before, 0)


async def test_drivers_spend_only_their_own_wallet_and_their_fleets_account(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform = running.platform
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    w = await _world(platform)
    driver = driver_md(platform, w.owner_x)
    option = candidates(platform, w.private_x, Mode.CHARGE)[0]
    victims = [w.wallet_y, w.account_a, w.account_b]
    before, rows_before = await _states(platform, victims), await _left_behind(platform)
    quote_id = await inventory_quote(platform, w.owner_x, w.private_x, [option])
    for i, victim in enumerate(victims):
        await _refused(ordering.CreateOrder(_create(quote_id, f"p{i}", victim), metadata=driver),
                       grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip
    assert await _states(platform, victims) == before
    assert await _left_behind(platform) == rows_before
    # Own wallet, named: fine. A member driver of fleet A may pay with fleet A's account.
    mine = await ordering.CreateOrder(_create(quote_id, "mine", w.wallet_x), metadata=driver)
    assert mine.order.payer.account_id == w.wallet_x
    member = driver_md(platform, w.driver_a)
    fleet_option = candidates(platform, w.vehicle_a, Mode.CHARGE, skip=frozenset({option.connector_id or ""}))[0]
    fleet_quote = await inventory_quote(platform, w.driver_a, w.vehicle_a, [fleet_option])
    paid = await ordering.CreateOrder(_create(fleet_quote, "fleet", w.account_a), metadata=member)
    assert paid.order.payer.account_id == w.account_a


async def test_start_by_scan_refuses_someone_elses_payer(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    platform = running.platform
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    w = await _world(platform)
    option = candidates(platform, w.vehicle_a, Mode.CHARGE)[0]
    manager = md_of(platform, "fm-a", Role.FLEET_MANAGER, Tenant("fleet", w.fleet_a))
    victims = [w.account_b, w.wallet_x]
    before, rows_before = await _states(platform, victims), await _left_behind(platform)
    for i, victim in enumerate(victims):
        request = ordering_pb2.StartByScanRequest(
            idempotency_key=f"scan-{i}",
            qr_payload=f"voltcloud://c/{option.station_id}/{option.connector_id}",
            vehicle_id=w.vehicle_a.id,
            payer=common_pb2.Payer(account_id=victim),
        )
        await _refused(ordering.StartByScan(request, metadata=manager), grpc.StatusCode.PERMISSION_DENIED)
    assert await _states(platform, victims) == before
    assert await _left_behind(platform) == rows_before


# --- finding 3: the vehicle ----------------------------------------------------------------------------------


async def test_orders_only_on_own_vehicles(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    platform = running.platform
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    w = await _world(platform)
    stranger = driver_md(platform, w.owner_y)
    other_fleet_driver = driver_md(platform, w.driver_b)
    other_manager = md_of(platform, "fm-b", Role.FLEET_MANAGER, Tenant("fleet", w.fleet_b))
    victims = [w.wallet_x, w.wallet_y, w.account_a, w.account_b]
    before, rows_before = await _states(platform, victims), await _left_behind(platform)

    for md, vehicle in ((stranger, w.private_x), (other_fleet_driver, w.vehicle_a), (other_manager, w.vehicle_a)):
        await _refused(ordering.QuotePowerUp(_quote_request(platform, vehicle), metadata=md), grpc.StatusCode.NOT_FOUND)
    option = candidates(platform, w.private_x, Mode.CHARGE)[0]
    quote_id = await inventory_quote(platform, w.owner_y, w.private_x, [option])
    await _refused(ordering.CreateOrder(_create(quote_id, "k"), metadata=stranger), grpc.StatusCode.NOT_FOUND)
    reservation = ordering_pb2.CreateReservationRequest(
        idempotency_key="r", station_id=option.station_id or "", vehicle_id=w.private_x.id
    )
    reservation.window.start.GetCurrentTime()
    reservation.window.end.FromSeconds(reservation.window.start.seconds + 1800)
    await _refused(ordering.CreateReservation(reservation, metadata=stranger), grpc.StatusCode.NOT_FOUND)
    assert await _states(platform, victims) == before
    assert await _left_behind(platform) == rows_before

    # The registered owner, the fleet's manager and a member driver still quote.
    owner = driver_md(platform, w.owner_x)
    manager = md_of(platform, "fm-a", Role.FLEET_MANAGER, Tenant("fleet", w.fleet_a))
    member = driver_md(platform, w.driver_a)
    for md, vehicle in ((owner, w.private_x), (manager, w.vehicle_a), (member, w.vehicle_a)):
        quote = await ordering.QuotePowerUp(_quote_request(platform, vehicle), metadata=md)
        assert quote.quote_id
    owned = await inventory_quote(platform, w.owner_x, w.private_x, [option])
    created = await ordering.CreateOrder(_create(owned, "own"), metadata=owner)
    assert created.order.payer.account_id == w.wallet_x
    # Others cannot read it either.
    await _refused(ordering.GetOrder(ordering_pb2.GetOrderRequest(order_id=created.order.order_id), metadata=stranger),
                   grpc.StatusCode.NOT_FOUND)  # fmt: skip
    listed = await ordering.ListOrders(ordering_pb2.ListOrdersRequest(vehicle_id=w.private_x.id), metadata=stranger)
    assert not listed.orders


# --- finding 6: accounts for others --------------------------------------------------------------------------


async def _accounts_of(platform: Platform, owner_id: str) -> list[str]:
    async with platform.db.transaction() as session:
        return list(await session.exec(select(LedgerAccount.id).where(LedgerAccount.owner_id == owner_id)))


async def test_accounts_only_for_owners_inside_the_callers_tenant(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform = running.platform
    settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
    w = await _world(platform)
    async with platform.db.transaction() as session:
        sub_b = (await session.exec(select(SubFleet).where(SubFleet.fleet_id == w.fleet_b))).first()
        sub_a = (await session.exec(select(SubFleet).where(SubFleet.fleet_id == w.fleet_a))).first()
        units = list(await session.exec(select(MobileUnit).order_by(col(MobileUnit.id))))
    assert sub_a is not None and sub_b is not None
    op_a = units[0].operator_id
    foreign_unit = next(u for u in units if u.operator_id != op_a)
    own_unit = units[0]
    manager = md_of(platform, "fm-a", Role.FLEET_MANAGER, Tenant("fleet", w.fleet_a))
    operator = md_of(platform, "op-user", Role.OPERATOR, Tenant("operator", op_a))
    fleet_kind, specialist_kind = settlement_pb2.ACCOUNT_KIND_FLEET, settlement_pb2.ACCOUNT_KIND_SPECIALIST

    refused = [
        (manager, fleet_kind, sub_b.id),
        (manager, fleet_kind, "sf-does-not-exist"),
        (operator, specialist_kind, foreign_unit.id),
        (operator, specialist_kind, "unit-does-not-exist"),
    ]
    for md, kind, owner in refused:
        request = settlement_pb2.CreateAccountRequest(kind=kind, owner_id=owner, currency="CNY")
        await _refused(settlement.CreateAccount(request, metadata=md), grpc.StatusCode.PERMISSION_DENIED)
        assert await _accounts_of(platform, owner) == []

    for md, kind, owner in ((manager, fleet_kind, sub_a.id), (operator, specialist_kind, own_unit.id)):
        request = settlement_pb2.CreateAccountRequest(kind=kind, owner_id=owner, currency="CNY")
        created = await settlement.CreateAccount(request, metadata=md)
        assert created.account.owner_id == owner


async def test_operator_cannot_spend_its_specialists_money(running: RunningPlatform, channel: grpc.aio.Channel) -> None:
    """Seeing a specialist's account (same tenant) is not spending it: no withdrawal, no coupon funding."""
    platform = running.platform
    settlement = settlement_pb2_grpc.SettlementServiceStub(channel)
    async with platform.db.transaction() as session:
        unit = (await session.exec(select(MobileUnit).order_by(col(MobileUnit.id)))).first()
    assert unit is not None
    operator = md_of(platform, "op-user", Role.OPERATOR, Tenant("operator", unit.operator_id))
    account = (
        await settlement.CreateAccount(
            settlement_pb2.CreateAccountRequest(kind=settlement_pb2.ACCOUNT_KIND_SPECIALIST, owner_id=unit.id),
            metadata=operator,
        )
    ).account.account_id
    # Specialist accounts are credited by settlement only (no top-up); the refusal comes before any balance check.
    money = common_pb2.Money(amount_minor=1, currency="CNY")
    before = await account_state(platform, account)
    withdraw = settlement_pb2.WithdrawRequest(
        account_id=account, amount=money, provider="simulated", destination="attacker-iban", idempotency_key="w"
    )
    await _refused(settlement.Withdraw(withdraw, metadata=operator), grpc.StatusCode.PERMISSION_DENIED)
    coupon = settlement_pb2.CreateCouponRequest(
        idempotency_key="c",
        coupon=settlement_pb2.Coupon(
            code="FREE", amount_off=common_pb2.Money(amount_minor=1000, currency="CNY"), funding_account_id=account
        ),
    )
    await _refused(settlement.CreateCoupon(coupon, metadata=operator), grpc.StatusCode.PERMISSION_DENIED)
    assert await account_state(platform, account) == before


async def test_operators_cancel_reservations_only_at_their_own_stations(
    running: RunningPlatform, channel: grpc.aio.Channel
) -> None:
    platform = running.platform
    ordering = ordering_pb2_grpc.OrderingServiceStub(channel)
    w = await _world(platform)
    option = candidates(platform, w.private_x, Mode.CHARGE)[0]
    request = ordering_pb2.CreateReservationRequest(
        idempotency_key="r", station_id=option.station_id or "", vehicle_id=w.private_x.id
    )
    request.window.start.GetCurrentTime()
    request.window.end.FromSeconds(request.window.start.seconds + 1800)
    reservation = (await ordering.CreateReservation(request, metadata=driver_md(platform, w.owner_x))).reservation
    async with platform.db.transaction() as session:
        operators = sorted(set(await session.exec(select(MobileUnit.operator_id))))
    stranger = next(o for o in operators if o != option.operator_id)
    cancel = ordering_pb2.CancelReservationRequest(reservation_id=reservation.reservation_id)
    other = md_of(platform, "op-b", Role.OPERATOR, Tenant("operator", stranger))
    await _refused(ordering.CancelReservation(cancel, metadata=other), grpc.StatusCode.NOT_FOUND)
    own = md_of(platform, "op-a", Role.OPERATOR, Tenant("operator", option.operator_id))
    assert (await ordering.CancelReservation(cancel, metadata=own)).reservation.state != reservation.state
