"""The fault schedule is a function of its seed: the same seed serves the same faults."""

from __future__ import annotations

from tests.faults.plan import CANDLE_FAULTS, EXCHANGE_FAULTS, LLM_FAULTS, FaultPlan

MINUTE_MS = 60_000


def test_the_same_seed_gives_the_same_faults_and_another_seed_others() -> None:
    first, again, other = FaultPlan(seed=17), FaultPlan(seed=17), FaultPlan(seed=18)
    sequence = [first.exchange_fault(n) for n in range(500)]
    assert sequence == [again.exchange_fault(n) for n in range(500)]
    assert sequence != [other.exchange_fault(n) for n in range(500)]
    assert set(sequence) == {None, *EXCHANGE_FAULTS}
    assert {first.llm_fault(n) for n in range(2000)} == {None, *LLM_FAULTS}


def test_bad_candles_are_seeded_per_life_and_every_kind_comes_up_in_five_turns() -> None:
    plan = FaultPlan(seed=17)
    bad = [plan.candle_bad(k * MINUTE_MS, life) for k in range(20) for life in range(3)]
    assert bad == [
        FaultPlan(seed=17).candle_bad(k * MINUTE_MS, life) for k in range(20) for life in range(3)
    ]
    assert True in bad and False in bad
    assert {plan.candle_kind(turn) for turn in range(5)} == set(CANDLE_FAULTS)
