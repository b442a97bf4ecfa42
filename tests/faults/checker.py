"""The invariant checker: plain SQL over the arena's SQLite file, independent of the arena's code.

It imports nothing from `app` (so a bug there cannot hide itself) and reads the tables as any
other tool would. Beside the database it takes the run's record (`RunRecord`, JSON): the daemon's
lives (start, end, how each ended), the faults served (from the fault proxy and the faulty model
server), the requests the model server saw, and the honest prices of the upstream exchange.

Invariants (each gives a list of violations; empty means it holds):

- `integrity`: `PRAGMA integrity_check` is ok and no foreign key dangles.
- `duplicate_cycles`: no (agent, scheduled time) recorded twice.
- `snapshots`: every `ok` agent-cycle has exactly one account snapshot; a `failed` or `skipped`
  one at most one (the daemon values no account it could not check against the cycle's prices:
  the latest snapshot then still holds the account).
- `fills_positions`: every position has one entry fill of its quantity; a closed one one exit
  fill at its exit price, an open one none; every fill belongs to a position of its agent and
  coin; at most one open position per agent and coin.
- `ledger`: per agent, the last snapshot's cash = starting cash + realized PnL - fees - funding -
  open margin, and its realized PnL, fees and funding equal the sums of the fill and funding rows.
- `bad_data`: no decision and no fill on an agent-cycle whose newest candle was served empty,
  stale, frozen, with an absurd wick or at zero to the daemon's life that ran it (what the
  fault log says was served).
- `fill_prices`: every fill within 10 % of the honest prices of the minutes around it (a fill
  at an injected wick or zero price is caught here, whichever cycle or exit check made it).
- `llm_recorded`: per model, the requests the model server received are all in `llm_call` and in
  `quota_usage` (every request is recorded, kills included).
- `lost_cycles`: every agent-cycle a model was asked for has its row (unless a kill or the final
  stop came right after the request), and every scheduled time some agent recorded was recorded
  by every agent still able to run (not stopped by a 401) unless a kill or the stop came then.
- `missed_boundaries`: within one daemon life, a scheduled time between two recorded ones has
  rows unless the previous cycle was still running (the scheduler then skips it by design).

Run: `python -m tests.faults.checker arena.db record.json` prints the report as JSON.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from tests.faults.plan import BAD_DATA_FAULTS

# A kill (or the final stop) this soon after a request or a scheduled time excuses a missing row:
# the cycle may have been cut before its commit, and the next start is past its time.
KILL_GRACE_S = 40.0
PRICE_BAND = 0.10
MONEY_TOLERANCE = 1e-6


def _t(value: str | None) -> float | None:
    """Return epoch seconds of a stored UTC datetime (naive text in SQLite)."""
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


@dataclass
class RunRecord:
    """What the harness knows besides the database."""

    interval_s: float
    timeframe_s: float
    agents: dict[str, str]  # agent name -> model (baselines: "")
    lives: list[dict[str, Any]]  # {"started_at", "ended_at", "ended_by": kill|stop|exit, "rc"}
    events: list[dict[str, Any]] = field(default_factory=list)
    llm_requests: list[dict[str, Any]] = field(default_factory=list)
    # coin -> [[minute open ms, low, high], ...] of the upstream's honest candles.
    honest: dict[str, list[list[float]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        return cls(**json.loads(path.read_text()))

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    def cut_times(self) -> list[float]:
        """Return when lives ended by a kill or the final stop (rows may be missing then)."""
        return [life["ended_at"] for life in self.lives if life["ended_by"] in ("kill", "stop")]

    def bad_candles(self) -> set[tuple[int, float]]:
        """Return (life, candle close in epoch s) pairs some request was served bad data for."""
        return {
            (int(e["life"]), e["newest_close_ms"] / 1000)
            for e in self.events
            if e["source"] == "exchange" and e["kind"] in BAD_DATA_FAULTS and "newest_close_ms" in e
        }

    def life_at(self, moment: float) -> int | None:
        """Return the index of the life running at `moment`."""
        for index, life in enumerate(self.lives):
            if life["started_at"] <= moment <= life["ended_at"] + 1.0:
                return index
        return None


class Checker:
    """Check one arena database against the run's record."""

    def __init__(self, database: Path, record: RunRecord) -> None:
        self.db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        self.db.row_factory = sqlite3.Row
        self.record = record

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return list(self.db.execute(sql, args))

    def run(self) -> dict[str, list[str]]:
        return {
            "integrity": self.integrity(),
            "duplicate_cycles": self.duplicate_cycles(),
            "snapshots": self.snapshots(),
            "fills_positions": self.fills_positions(),
            "ledger": self.ledger(),
            "bad_data": self.bad_data(),
            "fill_prices": self.fill_prices(),
            "llm_recorded": self.llm_recorded(),
            "lost_cycles": self.lost_cycles(),
            "missed_boundaries": self.missed_boundaries(),
        }

    # -- storage -------------------------------------------------------------------------------

    def integrity(self) -> list[str]:
        found = [row[0] for row in self.rows("PRAGMA integrity_check")]
        out = [] if found == ["ok"] else [f"integrity_check: {found}"]
        out += [
            f"dangling foreign key: {tuple(row)}" for row in self.rows("PRAGMA foreign_key_check")
        ]
        return out

    def duplicate_cycles(self) -> list[str]:
        return [
            f"agent {row['agent_id']} at {row['scheduled_at']}: {row['n']} rows"
            for row in self.rows(
                "SELECT agent_id, scheduled_at, count(*) AS n FROM cycle "
                "GROUP BY agent_id, scheduled_at HAVING n > 1"
            )
        ]

    def snapshots(self) -> list[str]:
        return [
            f"cycle {row['id']} ({row['name']} {row['scheduled_at']}, {row['status']}): "
            f"{row['n']} snapshots"
            for row in self.rows(
                "SELECT c.id, a.name, c.scheduled_at, c.status, "
                "(SELECT count(*) FROM account_snapshot s WHERE s.cycle_id = c.id) AS n "
                "FROM cycle c JOIN agent a ON a.id = c.agent_id "
                "WHERE n > 1 OR (c.status = 'ok' AND n != 1)"
            )
        ]

    # -- books ---------------------------------------------------------------------------------

    def fills_positions(self) -> list[str]:
        out: list[str] = []
        for p in self.rows("SELECT * FROM position"):
            fills = self.rows("SELECT * FROM fill WHERE position_id = ?", p["id"])
            entries = [f for f in fills if f["reason"] == "entry"]
            exits = [f for f in fills if f["reason"] != "entry"]
            where = f"position {p['id']} ({p['coin']} {p['side']}, {p['status']})"
            if len(entries) != 1 or not math.isclose(
                entries[0]["quantity"], p["quantity"], rel_tol=1e-9
            ):
                out.append(f"{where}: entry fills {[tuple(f) for f in entries]}")
            if p["status"] == "open" and exits:
                out.append(f"{where}: open but has {len(exits)} exit fills")
            if p["status"] != "open" and (
                len(exits) != 1 or not math.isclose(exits[0]["price"], p["exit_price"] or 0.0)
            ):
                out.append(f"{where}: closed with exit fills {[tuple(f) for f in exits]}")
        for f in self.rows(
            "SELECT f.id, f.agent_id, f.coin, p.agent_id AS p_agent, p.coin AS p_coin FROM fill f "
            "LEFT JOIN position p ON p.id = f.position_id"
        ):
            if f["p_agent"] != f["agent_id"] or f["p_coin"] != f["coin"]:
                out.append(f"fill {f['id']}: not on a position of its agent and coin")
        for row in self.rows(
            "SELECT agent_id, coin, count(*) AS n FROM position WHERE status = 'open' "
            "GROUP BY agent_id, coin HAVING n > 1"
        ):
            out.append(f"agent {row['agent_id']}: {row['n']} open {row['coin']} positions")
        return out

    def ledger(self) -> list[str]:
        out: list[str] = []
        for agent in self.rows("SELECT id, name, starting_cash_usd FROM agent"):
            last = self.rows(
                "SELECT * FROM account_snapshot WHERE agent_id = ? ORDER BY id DESC LIMIT 1",
                agent["id"],
            )
            if not last:
                continue
            snap = last[0]
            sums = self.rows(
                "SELECT coalesce(sum(realized_pnl_usd), 0) AS pnl, "
                "coalesce(sum(fee_usd), 0) AS fees FROM fill WHERE agent_id = ?",
                agent["id"],
            )[0]
            funding = self.rows(
                "SELECT coalesce(sum(amount_usd), 0) AS paid FROM funding_payment "
                "WHERE agent_id = ?",
                agent["id"],
            )[0]["paid"]
            margin = self.rows(
                "SELECT coalesce(sum(margin_usd), 0) AS m FROM position "
                "WHERE agent_id = ? AND status = 'open'",
                agent["id"],
            )[0]["m"]
            start = agent["starting_cash_usd"]
            expected = {
                "cash_usd": start + sums["pnl"] - sums["fees"] - funding - margin,
                "realized_pnl_usd": sums["pnl"],
                "fees_paid_usd": sums["fees"],
                "funding_paid_usd": funding,
            }
            scale = max(1.0, abs(start))
            for name, value in expected.items():
                if abs(snap[name] - value) > MONEY_TOLERANCE * scale:
                    out.append(
                        f"agent {agent['name']}: last snapshot {name} {snap[name]:.6f}, "
                        f"ledger says {value:.6f}"
                    )
        return out

    # -- market data ---------------------------------------------------------------------------

    def bad_data(self) -> list[str]:
        bad = self.record.bad_candles()
        step = self.record.timeframe_s
        out: list[str] = []
        for c in self.rows(
            "SELECT c.id, a.name, c.scheduled_at, c.started_at, c.status, "
            "(SELECT count(*) FROM decision d WHERE d.cycle_id = c.id) AS decisions, "
            "(SELECT count(*) FROM fill f WHERE f.cycle_id = c.id) AS fills "
            "FROM cycle c JOIN agent a ON a.id = c.agent_id"
        ):
            at, started = _t(c["scheduled_at"]), _t(c["started_at"])
            assert at is not None and started is not None
            life = self.record.life_at(started)
            newest = at - at % step
            if at == newest and (life, newest - step) not in bad:
                # At the bad candle's own close the daemon may decide on the candle before it
                # (one period's allowance for an exchange that publishes a closed candle late),
                # which this life was served honestly.
                continue
            if (life, newest) in bad and (c["decisions"] or c["fills"]):
                out.append(
                    f"{c['name']} {c['scheduled_at']} ({c['status']}): {c['decisions']} decisions, "
                    f"{c['fills']} fills on bad candles"
                )
        return out

    def fill_prices(self) -> list[str]:
        out: list[str] = []
        bands = {
            coin: {int(row[0]): (row[1], row[2]) for row in rows}
            for coin, rows in self.record.honest.items()
        }
        for f in self.rows("SELECT id, coin, price, reason, filled_at FROM fill"):
            at = _t(f["filled_at"])
            assert at is not None
            minute = int(at // 60) * 60_000
            near = [bands.get(f["coin"], {}).get(minute + k * 60_000) for k in range(-15, 2)]
            known = [band for band in near if band is not None]
            if not known:
                continue
            low = min(b[0] for b in known) * (1 - PRICE_BAND)
            high = max(b[1] for b in known) * (1 + PRICE_BAND)
            if not low <= f["price"] <= high:
                out.append(
                    f"fill {f['id']} {f['coin']} {f['reason']} at {f['price']:.6g} "
                    f"({f['filled_at']}): the market was {low:.6g}..{high:.6g}"
                )
        return out

    # -- records -------------------------------------------------------------------------------

    def llm_recorded(self) -> list[str]:
        seen: dict[str, int] = defaultdict(int)
        for request in self.record.llm_requests:
            seen[request["model"]] += 1
        out: list[str] = []
        for model, count in sorted(seen.items()):
            calls = self.rows(
                "SELECT count(*) AS n FROM llm_call WHERE model_requested = ? AND NOT cache_hit",
                model,
            )[0]["n"]
            quota = self.rows(
                "SELECT coalesce(sum(calls), 0) AS n FROM quota_usage WHERE model = ?", model
            )[0]["n"]
            if calls < count or quota < count:
                out.append(
                    f"{model}: the server received {count} requests; llm_call has {calls}, "
                    f"quota_usage counts {quota}"
                )
        return out

    def _cycles(self) -> dict[tuple[str, float], sqlite3.Row]:
        return {
            (row["name"], _t(row["scheduled_at"]) or 0.0): row
            for row in self.rows(
                "SELECT a.name, c.scheduled_at, c.status, c.started_at, c.finished_at "
                "FROM cycle c JOIN agent a ON a.id = c.agent_id"
            )
        }

    def _cut_soon_after(self, moment: float) -> bool:
        return any(moment <= cut <= moment + KILL_GRACE_S for cut in self.record.cut_times())

    def _life_of(self, moment: float) -> dict[str, Any] | None:
        for life in self.record.lives:
            if life["started_at"] <= moment <= life["ended_at"]:
                return life
        return None

    def lost_cycles(self) -> list[str]:
        cycles = self._cycles()
        by_model = {model: name for name, model in self.record.agents.items() if model}
        out: list[str] = []
        for request in self.record.llm_requests:
            name = by_model.get(request["model"])
            if name is None or request["cycle_at"] is None:
                continue
            at = datetime.fromisoformat(request["cycle_at"]).replace(tzinfo=UTC).timestamp()
            if (name, at) not in cycles and not self._cut_soon_after(request["at"]):
                out.append(
                    f"{name} {request['cycle_at']}: asked (request {request['number']}), no row"
                )
        # A 401 stops an agent until its daemon restarts: its later cycles are not due.
        stopped: list[tuple[str, float, float]] = []
        for event in self.record.events:
            if event["source"] == "llm" and event["kind"] == "unauthorized":
                life = self._life_of(event["at"])
                if life is not None and event["model"] in by_model:
                    stopped.append((by_model[event["model"]], event["at"], life["ended_at"]))
        boundaries = sorted({at for _, at in cycles})
        for at in boundaries:
            if self._cut_soon_after(at):
                continue
            for name in self.record.agents:
                if (name, at) in cycles:
                    continue
                if any(n == name and t0 <= at + KILL_GRACE_S and at <= t1 for n, t0, t1 in stopped):
                    continue
                moment = datetime.fromtimestamp(at, UTC)
                out.append(f"{name} {moment:%H:%M:%S}: others recorded it, it did not")
        return out

    def missed_boundaries(self) -> list[str]:
        """Scheduled times inside a life with no row while the daemon was idle."""
        cycles = self._cycles()
        ends: dict[float, float] = defaultdict(float)
        for (_, at), row in cycles.items():
            ends[at] = max(ends[at], _t(row["finished_at"]) or _t(row["started_at"]) or at)
        out: list[str] = []
        step = self.record.interval_s
        for life in self.record.lives:
            inside = sorted(
                at for at in ends if life["started_at"] <= at + step and at <= life["ended_at"]
            )
            for first, second in pairwise(inside):
                moment = first + step
                while moment < second - 1e-6:
                    if ends[first] < moment + 1.0 and not self._cut_soon_after(moment):
                        out.append(
                            f"{datetime.fromtimestamp(moment, UTC):%H:%M:%S}: no agent recorded "
                            "it; the cycle before ended at "
                            f"{datetime.fromtimestamp(ends[first], UTC):%H:%M:%S}"
                        )
                    moment += step
        return out


def summary(database: Path, record: RunRecord) -> dict[str, Any]:
    """Return the figures of a run: cycles by status, skip and failure reasons, fills."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    statuses = dict(db.execute("SELECT status, count(*) FROM cycle GROUP BY status").fetchall())
    reasons = db.execute(
        "SELECT status, substr(coalesce(error, ''), 1, 70) AS why, count(*) FROM cycle "
        "WHERE status != 'ok' GROUP BY status, why ORDER BY count(*) DESC LIMIT 25"
    ).fetchall()
    fills = db.execute("SELECT count(*) FROM fill").fetchone()[0]
    db.close()
    return {
        "cycles_by_status": statuses,
        "not_ok_reasons": [list(row) for row in reasons],
        "fills": fills,
        "crashes": sum(1 for life in record.lives if life["ended_by"] == "exit"),
        "kills": sum(1 for life in record.lives if life["ended_by"] == "kill"),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    database, record_path = Path(args[0]), Path(args[1])
    record = RunRecord.load(record_path)
    report = Checker(database, record).run()
    print(json.dumps({"violations": report, "summary": summary(database, record)}, indent=2))
    return 0 if not any(report.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
