"""The GB/T 32960 codec never raises on hostile bytes: a seeded 20,000-input slice of bench/fuzz_gbt32960.py
plus Hypothesis-shrunk inputs. The long run (>= 1,000,000 inputs) and its figures are in docs/protocols/gbt32960.md."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conformance.gbt32960_fuzz import Outcome, corpus, exercise, run


def test_twenty_thousand_seeded_inputs_do_not_crash() -> None:
    outcome = run(20_000, seed=32960)
    assert outcome.crashes == 0, outcome.first_crash
    # the generator must reach the data-unit decoders, not only the frame checks
    assert outcome.frames > 2_000 and outcome.messages["RealtimeData, rust decoded"] > 50
    assert outcome.messages["RealtimeData, rust refused"] > 500


SEEDS = corpus()


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.binary(max_size=64), st.integers(0, 400), st.integers(0, 2**32))
def test_hypothesis_mutations_do_not_crash(seed: bytes, junk: bytes, cut: int, rng_seed: int) -> None:
    outcome = Outcome()
    exercise(seed[:cut] + junk + seed[cut:], random.Random(rng_seed), outcome)
    assert outcome.crashes == 0, outcome.first_crash
