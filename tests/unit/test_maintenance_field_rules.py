"""maint-field's pure rules: who qualifies for a work order, the battery model, reminder stages, checklists."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from voltcloud.maintenance import battery, inspections, reminders
from voltcloud.maintenance.field_models import Engineer, EngineerCertificate
from voltcloud.maintenance.fielddispatch import Candidate, why_not
from voltcloud.maintenance.models import WorkOrder
from voltcloud.maintenance.ports import PackSample, Site
from voltcloud.platform.errors import InvalidArgument

NOW = dt.datetime(2031, 6, 1, 12, tzinfo=dt.UTC)
SITE = Site("st-1", "op-1", 31.2, 121.5)


def _engineer(**kw: object) -> Engineer:
    values: dict[str, object] = {
        "id": "eng-1",
        "operator_id": "op-1",
        "name": "Wang",
        "created_at": NOW,
        "skills": '["hv"]',
    }
    values.update(kw)
    return Engineer(**values)  # type: ignore[arg-type]


def _order(**kw: object) -> WorkOrder:
    values: dict[str, object] = {"id": "wo-1", "source": 1, "level": 3, "title": "t", "operator_id": "op-1",
                                 "station_id": "st-1", "created_at": NOW, "required_skills": '["hv"]'}  # fmt: skip
    values.update(kw)
    return WorkOrder(**values)  # type: ignore[arg-type]


def _cert(kind: str, expires: dt.datetime) -> EngineerCertificate:
    return EngineerCertificate(
        id="c", engineer_id="eng-1", operator_id="op-1", kind=kind, number="1",
        issued_at=NOW - dt.timedelta(days=900), expires_at=expires, created_at=NOW,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("engineer", "order", "certs", "reason"),
    [
        ({}, {}, [], None),
        ({"skills": "[]"}, {}, [], "lacks skills ['hv']"),
        ({"operator_id": "op-2"}, {}, [], "works for another operator"),
        ({"available": False}, {}, [], "is not available"),
        ({"retired_at": NOW}, {}, [], "is retired"),
        (
            {"shifts": json.dumps([["2031-06-01T00:00:00+00:00", "2031-06-01T08:00:00+00:00"]])},
            {},
            [],
            "is not on shift",
        ),
        ({"shifts": json.dumps([["2031-06-01T08:00:00+00:00", "2031-06-01T20:00:00+00:00"]])}, {}, [], None),
        ({"equipment_kinds": '["pack"]'}, {"equipment_kind": "charger"}, [], "does not work on charger"),
        ({"regions": "[[30.0, 120.0, 31.0, 121.0]]"}, {}, [], "does not serve the station's region"),
        ({"regions": "[[31.0, 121.0, 32.0, 122.0]]"}, {}, [], None),
        ({}, {"required_certificate": "hv"}, [], "holds no hv certificate"),
        ({}, {"required_certificate": "hv"}, [_cert("hv", NOW)], "hv certificate has lapsed"),
        ({}, {"required_certificate": "hv"}, [_cert("hv", NOW + dt.timedelta(seconds=1))], None),
    ],
)
def test_who_qualifies(
    engineer: dict[str, object], order: dict[str, object], certs: list[EngineerCertificate], reason: str | None
) -> None:
    assert why_not(Candidate(_engineer(**engineer), certs), _order(**order), SITE, NOW) == reason


def _samples(points: list[tuple[int, int]]) -> list[PackSample]:
    t0 = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    return [PackSample(i + 1, t0 + dt.timedelta(days=d), soh, 0, 25_000, 0) for i, (d, soh) in enumerate(points)]


def test_least_squares_and_the_predicted_month() -> None:
    fit = battery.least_squares([0, 1, 2, 3], [1, 3, 5, 7])
    assert fit is not None and fit.slope == pytest.approx(2) and fit.intercept == pytest.approx(1)
    assert battery.least_squares([1, 1, 1], [1, 2, 3]) is None
    # 950 falling 1 per 3 days: 800 after 450 days, 2032-03-26.
    month, _ = battery.predict_month(_samples([(0, 950), (30, 940), (60, 930), (90, 920)]), 800, 920)
    assert month == "2032-03"
    assert battery.predict_month(_samples([(0, 950), (30, 940)]), 800, 940)[0] == ""  # too few samples
    assert battery.predict_month(_samples([(0, 950), (30, 955), (60, 960)]), 800, 960)[0] == ""  # not falling
    assert battery.predict_month(_samples([(0, 950), (30, 940), (60, 930)]), 800, 790)[0] == "now"


def test_reminder_stages() -> None:
    assert reminders.due_stage(NOW + dt.timedelta(days=31), NOW) is None
    assert reminders.due_stage(NOW + dt.timedelta(days=30), NOW) == "30d"
    assert reminders.due_stage(NOW + dt.timedelta(days=7), NOW) == "7d"
    assert reminders.due_stage(NOW, NOW) == "lapsed"


def test_checklists_cover_their_template() -> None:
    items = tuple(inspections.ItemInput(code, 1, "", ()) for code in inspections.TEMPLATES[inspections.SIX_S])
    inspections.check(inspections.Submission(inspections.SIX_S, "st-1", items))
    with pytest.raises(InvalidArgument) as twice:
        inspections.check(inspections.Submission(inspections.SIX_S, "st-1", (*items, items[0])))
    assert twice.value.violations[0].field == f"items[{len(items)}].code"
    with pytest.raises(InvalidArgument) as over:
        bad = inspections.ItemInput(items[0].code, 6, "", ())
        inspections.check(inspections.Submission(inspections.SIX_S, "st-1", (bad, *items[1:])))
    assert over.value.violations[0].field == "items[0].score"
