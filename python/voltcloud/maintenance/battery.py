"""Battery health: a pack's SOH trend from its flow history, and the withdrawal flow.

The samples are the pack's flow-history entries that carry a SOH (stations' PackEvent: every station condition
report writes one, with cycles, temperature and charging power). The model is ordinary least squares of SOH on
time (days since the first sample): soh(t) = a + b*t. The predicted retirement month is when that line
crosses the operator's threshold (BatteryPolicy, 800 permille by default); nothing is predicted from fewer than
three samples spanning at least a day, or when the fitted slope is not falling. A second fit of SOH on cycles
gives the classic "per 100 cycles" trend. Temperature stress is the share of samples above 45 °C; the
fast-charge share is the share of charging samples at or above 1C (power >= the pack's capacity per hour)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from voltcloud.maintenance.engineers import require_operator
from voltcloud.maintenance.field_models import BatteryPolicy
from voltcloud.maintenance.ports import PackFacts, PackSample, Stations
from voltcloud.platform.auth import Principal, Role
from voltcloud.platform.enums import PackState
from voltcloud.platform.errors import InvalidArgument, NotFound

DEFAULT_RETIREMENT_PERMILLE = 800
HOT_MILLI_C = 45_000
MIN_FIT_SAMPLES = 3
MIN_FIT_SPAN = dt.timedelta(days=1)
MODEL_SAMPLES = 5_000  # the most recent samples the model is fitted on
WITHDRAWN = int(PackState.WITHDRAWN)


@dataclass(frozen=True)
class Fit:
    intercept: float
    slope: float  # SOH permille per unit of x


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """y = a + b*x by ordinary least squares; None when x does not vary."""
    n = len(xs)
    if n < 2:
        return None
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return Fit(mean_y - slope * mean_x, slope)


@dataclass(frozen=True)
class Health:
    pack: PackFacts
    samples: list[PackSample]  # the page asked for
    threshold_permille: int
    trend_per_30_days: int
    trend_per_100_cycles: int
    hot_share_permille: int
    max_temperature_milli_c: int
    fast_charge_share_permille: int
    predicted_month: str
    fitted: int


def predict_month(samples: Sequence[PackSample], threshold: int, current: int) -> tuple[str, Fit | None]:
    """("YYYY-MM" | "now" | "", the time fit)."""
    if current and current <= threshold:
        return "now", None
    if len(samples) < MIN_FIT_SAMPLES or samples[-1].at - samples[0].at < MIN_FIT_SPAN:
        return "", None
    t0 = samples[0].at
    fit = least_squares([(s.at - t0).total_seconds() / 86400 for s in samples], [s.soh_permille for s in samples])
    if fit is None or fit.slope >= 0:
        return "", fit
    days = (threshold - fit.intercept) / fit.slope
    crossing = t0 + dt.timedelta(days=min(days, 365 * 60))
    if crossing <= samples[-1].at:
        return "now", fit
    return f"{crossing.year:04d}-{crossing.month:02d}", fit


def _shares(samples: Sequence[PackSample], capacity_wh: int) -> tuple[int, int, int]:
    if not samples:
        return 0, 0, 0
    hot = sum(1 for s in samples if s.temperature_milli_c > HOT_MILLI_C)
    charging = [s for s in samples if s.power_w > 0]
    fast = sum(1 for s in charging if capacity_wh > 0 and s.power_w >= capacity_wh)
    fast_share = round(1000 * fast / len(charging)) if charging else 0
    return round(1000 * hot / len(samples)), max(s.temperature_milli_c for s in samples), fast_share


async def threshold_of(session: AsyncSession, operator_id: str) -> int:
    policy = await session.get(BatteryPolicy, operator_id) if operator_id else None
    return policy.retirement_soh_permille if policy is not None else DEFAULT_RETIREMENT_PERMILLE


async def load_pack(session: AsyncSession, principal: Principal, stations: Stations, pack_id: str) -> PackFacts:
    pack = await stations.pack(session, pack_id)
    if pack is None:
        raise NotFound(f"pack {pack_id} not found")
    if principal.role is Role.FLEET_MANAGER:
        raise NotFound(f"pack {pack_id} not found")  # fleets own no packs: battery health is the operator's
    require_operator(principal, pack.operator_id, f"pack {pack_id}")
    return pack


async def health(
    session: AsyncSession,
    principal: Principal,
    stations: Stations,
    pack_id: str,
    *,
    start: dt.datetime | None,
    end: dt.datetime | None,
    after_seq: int,
    page_size: int,
) -> Health:
    pack = await load_pack(session, principal, stations, pack_id)
    page = await stations.pack_samples(session, pack_id, start=start, end=end, after_seq=after_seq, limit=page_size)
    window = await stations.pack_samples(session, pack_id, start=start, end=end, after_seq=0, limit=MODEL_SAMPLES)
    threshold = await threshold_of(session, pack.operator_id)
    month, fit = predict_month(window, threshold, pack.soh_permille)
    by_cycles = least_squares([s.cycles for s in window], [s.soh_permille for s in window])
    hot, hottest, fast = _shares(window, pack.capacity_wh)
    return Health(
        pack=pack,
        samples=page,
        threshold_permille=threshold,
        trend_per_30_days=round(fit.slope * 30) if fit else 0,
        trend_per_100_cycles=round(by_cycles.slope * 100) if by_cycles else 0,
        hot_share_permille=hot,
        max_temperature_milli_c=hottest,
        fast_charge_share_permille=fast,
        predicted_month=month,
        fitted=len(window) if fit else 0,
    )


@dataclass(frozen=True)
class Withdrawn:
    pack: PackFacts
    changed: bool  # False: it was withdrawn already (nothing written, no command needed)


async def withdraw(
    session: AsyncSession, principal: Principal, stations: Stations, pack_id: str, *, reason: str, now: dt.datetime
) -> Withdrawn:
    """Pack -> WITHDRAWN: it leaves circulation (every engine stops offering it through the inventory feed).
    The caller sends the station its withdraw command after the commit."""
    pack = await load_pack(session, principal, stations, pack_id)
    if pack.state == WITHDRAWN:
        return Withdrawn(pack, False)
    done = await stations.withdraw_pack(
        session, pack_id, now=now, actor=principal.subject, actor_role=int(principal.role), reason=reason or "withdrawn"
    )
    return Withdrawn(done, True)


async def set_threshold(session: AsyncSession, principal: Principal, operator_id: str, permille: int) -> int:
    """An operator's retirement threshold (500..999 permille): below it a pack is due for withdrawal."""
    if not operator_id:
        raise InvalidArgument.for_field("operator_id", "is required")
    if not 500 <= permille <= 999:
        raise InvalidArgument.for_field("retirement_soh_permille", "must be within 500..999")
    require_operator(principal, operator_id, f"operator {operator_id}")
    policy = await session.get(BatteryPolicy, operator_id) or BatteryPolicy(operator_id=operator_id)
    policy.retirement_soh_permille = permille
    session.add(policy)
    return permille
