"""Fault soak: `arena run` for a long time through every injected fault kind, killed now and then.

    nice -n 10 .venv/bin/python benchmarks/soak_faults.py --minutes 30 --agents 12 --seed 17

The same harness as the bounded test (`tests/faults/`): the fault proxy in front of the fake
exchange, the faulty model server in front of the fake model, the daemon as a subprocess (real
ccxt, real openai SDK, loopback only), a SIGKILL and restart about every `--kill-every-min`
minutes (seeded), SIGTERM at the end, then the SQL invariant checker. Prints the faults injected
by kind, crashes, records lost, duplicates, cycles skipped or failed with their reasons, memory
over time, and every violation found; `--json PATH` writes it all too. Exit code 1 when an
invariant does not hold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.harness import RunOptions, RunResult, run_faults


def memory_by_minute(samples: list[tuple[float, int]]) -> list[tuple[int, int, int]]:
    """Return (minute, min RSS MB, max RSS MB) of the daemon, skipping its first seconds."""
    minutes: dict[int, list[int]] = defaultdict(list)
    for at_s, rss_kb in samples:
        if rss_kb > 50_000:  # below this the interpreter is still starting
            minutes[int(at_s // 60)].append(rss_kb)
    return [(m, min(v) // 1024, max(v) // 1024) for m, v in sorted(minutes.items())]


def report(result: RunResult, elapsed_s: float) -> dict[str, object]:
    lives = result.record.lives
    v = result.violations
    return {
        "elapsed_s": round(elapsed_s),
        "faults_by_kind": result.fault_counts,
        "faults_total": sum(result.fault_counts.values()),
        "llm_requests": len(result.record.llm_requests),
        "kills": sum(1 for life in lives if life["ended_by"] == "kill"),
        "crashes": [life for life in lives if life["ended_by"] == "exit"],
        "final_stop_rc": lives[-1]["rc"] if lives else None,
        "cycles": result.figures["cycles_by_status"],
        "not_ok_reasons": result.figures["not_ok_reasons"],
        "fills": result.figures["fills"],
        "records_lost": len(v["lost_cycles"])
        + len(v["llm_recorded"])
        + len(v["missed_boundaries"]),
        "duplicates": len(v["duplicate_cycles"]),
        "tracebacks_in_log": result.tracebacks,
        "memory_mb_by_minute": memory_by_minute(result.memory_kb),
        "violations": {name: found for name, found in v.items() if found},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--kill-every-min", type=float, default=3.0)
    parser.add_argument("--interval", default="5s", help="SCHEDULE_INTERVAL of the daemon")
    parser.add_argument("--workdir", type=Path, help="keep the database and logs here")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    kills = max(0, int(args.minutes / args.kill_every_min) - 1)
    options = RunOptions(
        kills=kills,
        min_faults=0,
        duration_s=args.minutes * 60,
        agents=args.agents,
        seed=args.seed,
        interval=args.interval,
        life_s=args.kill_every_min * 60,
        limit_s=args.minutes * 60 + 600,
    )
    with TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        started = time.monotonic()
        result = run_faults(options, workdir)
        found = report(result, time.monotonic() - started)
    violations = found.pop("violations")
    for key, value in found.items():
        print(f"{key}: {json.dumps(value)}")
    for name, items in violations.items():  # type: ignore[union-attr]
        print(f"VIOLATED {name}: {len(items)}")
        for item in items[:10]:
            print(f"  {item}")
    if args.json:
        args.json.write_text(json.dumps({**found, "violations": violations}, indent=2))
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
