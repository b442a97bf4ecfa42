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


def test_every_candle_kind_comes_up_and_one_candle_gets_one_answer_per_life() -> None:
    plan = FaultPlan(seed=17)
    kinds = {
        plan.candle_fault(k * MINUTE_MS, life, MINUTE_MS) for k in range(20) for life in range(3)
    }
    assert kinds == {None, *CANDLE_FAULTS}
    assert plan.candle_fault(5 * MINUTE_MS, 1, MINUTE_MS) == plan.candle_fault(
        5 * MINUTE_MS, 1, MINUTE_MS
    )
