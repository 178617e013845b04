"""The order state machine and the personalised ranking (pure rules, no I/O)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from voltcloud.ordering import ranking
from voltcloud.ordering.states import ACTIVE, TERMINAL, TRANSITIONS, OrderState, check_transition
from voltcloud.platform.errors import FailedPrecondition

S = OrderState

HAPPY_PATH = [S.CREATED, S.ASSIGNED, S.EN_ROUTE, S.IN_SERVICE, S.COMPLETED]


def test_the_happy_path_is_allowed_step_by_step() -> None:
    for current, target in itertools.pairwise(HAPPY_PATH):
        assert check_transition(int(current), target) is current


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.CREATED, S.COMPLETED),
        (S.CREATED, S.IN_SERVICE),
        (S.EN_ROUTE, S.ASSIGNED),
        (S.IN_SERVICE, S.CANCELLED),
        (S.COMPLETED, S.CANCELLED),
        (S.CANCELLED, S.CREATED),
        (S.EXPIRED, S.EN_ROUTE),
    ],
)
def test_illegal_transitions_are_failed_precondition(current: OrderState, target: OrderState) -> None:
    with pytest.raises(FailedPrecondition) as err:
        check_transition(int(current), target)
    assert current.label in err.value.message and target.label in err.value.message


def test_final_states_have_no_way_out_and_every_active_state_can_end() -> None:
    assert {S.COMPLETED, S.CANCELLED, S.FAILED, S.EXPIRED} == TERMINAL
    for state in ACTIVE:
        assert TRANSITIONS[state] & TERMINAL, state
    assert S.CREATED in TRANSITIONS[S.ASSIGNED]  # re-dispatch after a decline


def test_unknown_state_is_refused() -> None:
    with pytest.raises(FailedPrecondition):
        check_transition(42, S.ASSIGNED)


def _candidates() -> list[ranking.Candidate]:
    return [
        ranking.Candidate("fast", 1, "st-a", finish_s=900, driver_time_s=900, distance_m=3000, price_minor=9000),
        ranking.Candidate("cheap", 2, "st-b", finish_s=4000, driver_time_s=4000, distance_m=5000, price_minor=3000),
        ranking.Candidate("valet", 3, "st-a", finish_s=2500, driver_time_s=0, distance_m=4000, price_minor=8000),
    ]


def test_time_sensitive_customer_gets_the_earliest_finish_first() -> None:
    ranked = ranking.rank(_candidates(), ranking.Preferences(price_sensitivity=0.0))
    assert ranked[0].candidate.key == "fast"
    assert ranked[0].reason is ranking.Reason.EARLIEST_FINISH
    assert [r.rank for r in ranked] == [1, 2, 3]


def test_price_sensitive_customer_gets_the_cheapest_first() -> None:
    ranked = ranking.rank(_candidates(), ranking.Preferences(price_sensitivity=1.0))
    assert ranked[0].candidate.key == "cheap"
    assert ranked[0].reason is ranking.Reason.CHEAPEST


def test_favourites_history_and_fleet_policy_move_options_up() -> None:
    neutral = ranking.rank(_candidates(), ranking.Preferences(price_sensitivity=0.5))
    fleet = ranking.rank(_candidates(), ranking.Preferences(price_sensitivity=0.5, fleet_modes=(3,)))
    assert fleet[0].candidate.key == "valet"
    assert fleet[0].reason is ranking.Reason.FLEET_PREFERRED
    loyal = ranking.rank(
        _candidates(),
        ranking.Preferences(
            price_sensitivity=0.5, favourite_stations=frozenset({"st-b"}), past_stations=Counter({"st-b": 9})
        ),
    )
    position = {r.candidate.key: r.rank for r in loyal}
    assert position["cheap"] <= {r.candidate.key: r.rank for r in neutral}["cheap"]


def test_ranking_is_deterministic_and_empty_is_empty() -> None:
    prefs = ranking.Preferences()
    assert ranking.rank([], prefs) == []
    assert ranking.rank(_candidates(), prefs) == ranking.rank(list(reversed(_candidates())), prefs)
