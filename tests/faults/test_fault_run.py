"""The bounded fault run: `arena run` through 300+ injected faults and 10 SIGKILLs, then checked.

The daemon runs as a subprocess with real ccxt and the real openai SDK, against the fault proxy
(`exchange_proxy.py`) and the faulty model server (`model_server.py`), both fed by a seeded
schedule (`plan.py`). Each life is killed after a seeded number of exchange requests (a state,
not a time, so a slow machine makes the run longer, never different), then started again. The
last life is stopped with SIGTERM. The invariant checker (`checker.py`, plain SQL, no `app`
import) then reads the database with the run's record. Figures from longer runs:
`benchmarks/soak_faults.py` and docs/RELIABILITY.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import RunOptions, run_faults
from tests.faults.plan import CANDLE_FAULTS, EXCHANGE_FAULTS, LLM_FAULTS, FaultPlan

# Denser than the soak's plan, so 300 faults come within about three minutes. Candle faults are
# keyed by the wall clock's minute, of which a short run sees few: two lives get only bad
# candles, so candle kinds always come up. Few cycles reach the models (most are skipped on bad
# market data), so nearly every model request is a fault: this seed's first 11 faulty requests
# already hold 8 kinds.
PLAN = FaultPlan(seed=17, exchange_rate=0.2, candle_rate=0.3, llm_rate=0.9, bad_candle_lives=(3, 7))


@pytest.mark.slow
def test_300_faults_and_10_kills_leave_whole_books_and_no_lost_or_duplicated_cycle(
    tmp_path: Path,
) -> None:
    result = run_faults(
        RunOptions(kills=10, min_faults=300, agents=8, seed=17, plan=PLAN), tmp_path
    )

    served = result.fault_counts
    assert sum(n for kind, n in served.items() if kind != "exchange:frozen_price") >= 300, served
    kinds = {key.split(":", 1)[1] for key in served}
    # Every request-level kind shows up in a run this long; candle kinds and the rarer model
    # kinds are seeded too, so the same seed always serves the same mix.
    assert set(EXCHANGE_FAULTS) <= kinds, served
    assert kinds & set(CANDLE_FAULTS), served
    assert len(kinds & set(LLM_FAULTS)) >= 8, served

    lives = result.record.lives
    assert [life["ended_by"] for life in lives].count("kill") == 10
    crashes = [life for life in lives if life["ended_by"] == "exit"]
    assert crashes == [], f"the daemon exited on its own: {crashes}; see {result.log_path}"
    assert lives[-1]["ended_by"] == "stop" and lives[-1]["rc"] == 0, lives[-1]

    broken = {name: found for name, found in result.violations.items() if found}
    lines = [f"{name}: {len(v)}, e.g. " + "; ".join(v[:3]) for name, v in broken.items()]
    where = result.log_path.parent
    assert broken == {}, f"invariants broken (run kept in {where}):\n" + "\n".join(lines)
