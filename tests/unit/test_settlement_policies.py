"""Settlement's policies without I/O: who may open which account, whose prices an operator sets and sees, the
capture fee split and a hold's expiry. Through gRPC these are covered by test_settlement_service.py and the
security tests; here each rule answers on its own."""

from __future__ import annotations

import datetime as dt

import pytest

from voltcloud.platform.auth import Principal, Role, Tenant
from voltcloud.platform.errors import InvalidArgument, PermissionDenied
from voltcloud.settlement import accounts, holds, rates
from voltcloud.settlement.money import DEFAULT_CURRENCY, AccountKind

ADMIN = Principal("root", Role.PLATFORM_ADMIN, None)
OPERATOR = Principal("op-user", Role.OPERATOR, Tenant("operator", "op-01"))
MANAGER = Principal("mgr", Role.FLEET_MANAGER, Tenant("fleet", "fl-01"))
DRIVER = Principal("drv-1", Role.DRIVER, None)


def test_account_plan_maps_kind_to_owner_and_tenant() -> None:
    own_fleet = accounts.plan_account(MANAGER, AccountKind.FLEET, "", "", sets_credit_limit=False)
    assert (own_fleet.owner_kind, own_fleet.owner_id, own_fleet.tenant) == ("fleet", "fl-01", None)
    assert own_fleet.currency == DEFAULT_CURRENCY
    sub = accounts.plan_account(MANAGER, AccountKind.FLEET, "sub-7", "EUR", sets_credit_limit=False)
    assert (sub.owner_kind, sub.owner_id, sub.tenant, sub.currency) == ("subfleet", "sub-7", "fleet:fl-01", "EUR")
    specialist = accounts.plan_account(OPERATOR, AccountKind.SPECIALIST, "unit-3", "", sets_credit_limit=False)
    assert (specialist.owner_kind, specialist.tenant) == ("specialist", "operator:op-01")
    platform = accounts.plan_account(ADMIN, AccountKind.PROMOTIONS, "", "", sets_credit_limit=True)
    assert (platform.owner_kind, platform.owner_id) == ("platform", "platform")


@pytest.mark.parametrize(
    ("principal", "kind", "credit"),
    [
        (DRIVER, AccountKind.CUSTOMER, False),
        (OPERATOR, AccountKind.FLEET, False),
        (MANAGER, AccountKind.OPERATOR, False),
        (OPERATOR, AccountKind.OPERATOR, True),
    ],
)
def test_account_plan_refuses_what_the_role_may_not_open(principal: Principal, kind: int, credit: bool) -> None:
    with pytest.raises(PermissionDenied):
        accounts.plan_account(principal, kind, "", "", sets_credit_limit=credit)


def test_account_plan_rejects_unknown_and_ledger_kinds_and_bad_currency() -> None:
    with pytest.raises(InvalidArgument, match="kind"):
        accounts.plan_account(ADMIN, 999, "", "", sets_credit_limit=False)
    with pytest.raises(InvalidArgument, match="created by the ledger"):
        accounts.plan_account(ADMIN, AccountKind.ARREARS, "", "", sets_credit_limit=False)
    with pytest.raises(InvalidArgument, match="currency"):
        accounts.plan_account(ADMIN, AccountKind.CUSTOMER, "d", "yuan", sets_credit_limit=False)


def test_operators_price_and_see_only_their_own_and_the_platform_models() -> None:
    assert rates.pricing_operator(OPERATOR, "", platform_default=False) == "op-01"
    assert rates.pricing_operator(ADMIN, "op-09", platform_default=True) == "op-09"
    with pytest.raises(PermissionDenied):
        rates.pricing_operator(OPERATOR, "op-09", platform_default=False)
    with pytest.raises(PermissionDenied):
        rates.pricing_operator(OPERATOR, "op-01", platform_default=True)
    assert rates.visible_operators(OPERATOR, "") == ["op-01", ""]
    assert rates.visible_operators(OPERATOR, "op-01") == ["op-01"]
    assert rates.visible_operators(OPERATOR, "op-09") == []
    assert rates.visible_operators(ADMIN, "") is None
    assert rates.visible_operators(DRIVER, "op-09") == ["op-09"]


def test_fee_breakdown_and_hold_expiry() -> None:
    assert holds.fee_breakdown(1_000, 0) is None
    assert holds.fee_breakdown(1_001, 500) == {holds.PLATFORM_FEE_KEY: 50, "order revenue": 951}
    with pytest.raises(InvalidArgument, match="platform_fee_basis_points"):
        holds.fee_breakdown(1_000, 10_001)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert holds.expiry(now, None) == now + holds.DEFAULT_HOLD_TTL
    assert holds.expiry(now, dt.timedelta(minutes=5)) == now + dt.timedelta(minutes=5)
    with pytest.raises(InvalidArgument, match="ttl"):
        holds.expiry(now, dt.timedelta(0))
