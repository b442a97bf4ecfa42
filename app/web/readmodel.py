"""Everything the dashboard reads, in one place: SELECTs over the arena's tables, never a write.

Every connection the dashboard opens runs with `PRAGMA query_only`, so SQLite itself refuses a
write; in WAL mode readers never block the daemon's writer, nor it them. Results that cost more
than a lookup (the leaderboard, analytics, the account-value lines) are kept per data version
(the newest account-snapshot and agent ids: every agent-cycle and monitor event writes a
snapshot), so requests between two commits are served from memory. While one request recomputes
a stale entry, the others get the previous value: at most one commit old, never blocked.
The account-value series grow incrementally, since snapshots are only ever appended.

Prices come from the candle table (the daemon caches every closed candle it fetches, as does
`arena data download`); where it holds none for a run, from the run's own fills.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, Literal, TypeVar

import numpy as np
from sqlalchemy import Engine, String, case, event, func, select, type_coerce

from app.db import models, queries
from app.db.llm_rows import decompress_text
from app.db.session import make_engine
from app.domain import ALPHA_ARENA_COINS
from app.reports import LeaderboardRow, leaderboard

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_POINTS_PER_LINE: Final = 2_000
CARD_LIMIT_MAX: Final = 500
_BENCHMARK_MODEL: Final = "buy_and_hold"
_PRICE_SERIES_TTL_S: Final = 60.0
# How long a read of the data version is trusted: far below the live page's 5 s promise.
VERSION_TTL_S: Final = 0.25


def utc_now() -> datetime:
    """Return the current time in UTC (the read model's only clock read)."""
    return datetime.now(UTC)


def open_read_engine(url: str) -> Engine:
    """Open the database for reading only: SQLite refuses any write on these connections."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":

        def _query_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA query_only=ON")
            finally:
                cursor.close()

        event.listen(engine, "connect", _query_only)
    return engine


# -- what the pages and the API are given ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run: the live arena or a backtest."""

    run_id: str
    kind: Literal["live", "backtest"]
    agents: tuple[str, ...]
    first_at: datetime | None
    last_at: datetime | None
    cycles: int


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent of a run and its latest books."""

    agent_id: int
    name: str
    provider: str
    model: str
    starting_cash_usd: float
    equity_usd: float
    created_at: datetime
    first_cycle_at: datetime | None
    invocations: int
    last_at: datetime | None

    @property
    def is_benchmark(self) -> bool:
        """Return True for the buy-and-hold baseline (nof1's benchmark line)."""
        return self.provider == "baseline" and self.model == _BENCHMARK_MODEL


@dataclass(frozen=True, slots=True)
class BoardRow:
    """One agent's standing: the CLI leaderboard's figures and the advanced view's."""

    base: LeaderboardRow
    starting_cash_usd: float
    total_pnl_usd: float
    wins: int
    losses: int
    win_dollars: float
    lose_dollars: float
    biggest_win_usd: float | None
    biggest_loss_usd: float | None
    avg_holding_s: float | None
    median_holding_s: float | None
    long_trades: int
    short_trades: int
    expectancy_usd: float | None
    avg_leverage: float | None
    avg_confidence: float | None
    calls: int
    failures: int
    tokens: int
    is_benchmark: bool


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the account-value chart, downsampled on the server."""

    key: str
    label: str
    kind: Literal["agent", "benchmark"]
    times_ms: list[int]
    values: list[float]
    starting_cash_usd: float


@dataclass(frozen=True, slots=True)
class Price:
    """A coin's latest known price and when it was true."""

    coin: str
    price: float
    at: datetime
    source: Literal["candles", "fills"]


@dataclass(frozen=True, slots=True)
class PositionView:
    """An open position with its current price and exit plan."""

    position_id: int
    agent: str
    coin: str
    side: str
    quantity: float
    entry_price: float
    current_price: float | None
    price_at: datetime | None
    unrealized_pnl_usd: float | None
    leverage: int
    margin_usd: float
    liquidation_price: float
    profit_target: float | None
    stop_loss: float | None
    invalidation_condition: str
    confidence: float | None
    risk_usd: float | None
    justification: str
    entry_fee_usd: float
    funding_usd: float
    opened_at: datetime
    holding_s: float


@dataclass(frozen=True, slots=True)
class TradeView:
    """A closed position: entry, exit, costs and what it made."""

    position_id: int
    agent: str
    coin: str
    side: str
    quantity: float
    leverage: int
    entry_price: float
    exit_price: float
    opened_at: datetime
    closed_at: datetime
    entry_fee_usd: float
    exit_fee_usd: float
    funding_usd: float
    gross_pnl_usd: float
    net_pnl_usd: float
    exit_reason: str
    confidence: float | None
    margin_usd: float
    profit_target: float | None
    stop_loss: float | None
    invalidation_condition: str
    entry_fill_id: int
    exit_fill_id: int

    @property
    def holding_s(self) -> float:
        """Return how long the position was open, in seconds."""
        return (self.closed_at - self.opened_at).total_seconds()


@dataclass(frozen=True, slots=True)
class DecisionView:
    """One coin's decision in a call and what became of it."""

    coin: str
    signal: str
    outcome: str
    reason: str | None
    quantity: float | None
    leverage: int | None
    profit_target: float | None
    stop_loss: float | None
    invalidation_condition: str | None
    confidence: float | None
    risk_usd: float | None
    justification: str | None
    filled_quantity: float | None
    fill_price: float | None


@dataclass(frozen=True, slots=True)
class CallCard:
    """One model call as the chat shows it: who, when, the gist and the decisions."""

    call_id: int
    agent: str
    provider: str
    model: str
    created_at: datetime
    outcome: str
    error: str | None
    cache_hit: bool
    latency_ms: int
    prompt_tokens: int
    completion_tokens: int
    invocation: int | None
    scheduled_at: datetime | None
    summary: str
    decisions: tuple[DecisionView, ...]
    has_prompt: bool


@dataclass(frozen=True, slots=True)
class CallImage:
    """A chart image a vision agent's call sent; `number` counts from 1 in the prompt's order."""

    number: int
    kind: str
    caption: str
    width_px: int
    height_px: int


@dataclass(frozen=True, slots=True)
class CallDetail:
    """A call in full: the prompt it was sent (and its chart images), its reasoning and its raw
    answer."""

    card: CallCard
    system_prompt: str
    user_prompt: str
    reasoning: str
    response_text: str
    images: tuple[CallImage, ...] = ()


@dataclass(frozen=True, slots=True)
class SignalStats:
    """Counts and moments of one kind of signal (for the analytics tables)."""

    count: int = 0
    confidence_mean: float | None = None
    confidence_sq_mean: float | None = None
    leverage_mean: float | None = None
    leverage_sq_mean: float | None = None


@dataclass(frozen=True, slots=True)
class AgentFacts:
    """What the analytics tables are computed from, for one agent."""

    agent: AgentInfo
    trades: tuple[TradeView, ...]
    open_positions: tuple[PositionView, ...]
    signals: dict[str, SignalStats]
    entry_leverages: tuple[int, ...]
    entry_confidences: tuple[float, ...]
    cycle_times_s: tuple[float, ...]
    last_call_id: int | None
    last_call_at: datetime | None
    equity_usd: float


@dataclass
class _Series:
    """An agent's books over time, sorted by time (the newest record per time wins).

    `values` has three columns: account value, realized PnL and unrealized PnL (USD).
    """

    times_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty((0, 3), dtype=np.float64))

    def extend(self, times_ms: np.ndarray, values: np.ndarray) -> None:
        if len(times_ms) == 0:
            return
        times = np.concatenate((self.times_ms, times_ms))
        vals = np.concatenate((self.values, values))
        if len(self.times_ms) and times_ms.min() < self.times_ms[-1]:
            # A slow cycle's snapshot may land after the monitor's later one.
            order = np.argsort(times, kind="stable")
            times, vals = times[order], vals[order]
        keep = np.ones(len(times), dtype=bool)
        keep[:-1] = times[1:] != times[:-1]
        self.times_ms, self.values = times[keep], vals[keep]

    @property
    def equity(self) -> np.ndarray:
        column: np.ndarray = self.values[:, 0]
        return column


@dataclass
class _RunSeries:
    last_snapshot_id: int = 0
    by_agent: dict[int, _Series] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _VersionCache:
    """Values computed for a data version.

    A stale value is served while another thread recomputes it; with `background`, the first
    request after a change gets the stale value too, and one worker thread recomputes (so heavy
    results never hold a request up, and cost at most one core while commits keep coming).
    """

    def __init__(self, size: int = 512) -> None:
        self._values: OrderedDict[Hashable, tuple[Hashable, Any]] = OrderedDict()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()
        self._size = size
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-refresh")

    def get(
        self,
        key: Hashable,
        version: Hashable,
        compute: Callable[[], T],
        *,
        background: bool = False,
    ) -> T:
        with self._guard:
            hit = self._values.get(key)
            lock = self._locks.setdefault(key, threading.Lock())
        if hit is not None and hit[0] == version:
            value: T = hit[1]
            return value
        if hit is not None:
            if background:
                if lock.acquire(blocking=False):
                    self._worker.submit(self._refresh, key, version, compute, lock)
                stale: T = hit[1]
                return stale
            if not lock.acquire(blocking=False):
                waiting: T = hit[1]
                return waiting
        else:
            lock.acquire()
        try:
            return self._compute(key, version, compute)
        finally:
            lock.release()

    def _refresh(
        self, key: Hashable, version: Hashable, compute: Callable[[], Any], lock: threading.Lock
    ) -> None:
        try:
            self._compute(key, version, compute)
        except Exception:  # the next request computes it again, in its own thread
            log.warning("refreshing %r failed", key, exc_info=True)
        finally:
            lock.release()

    def _compute(self, key: Hashable, version: Hashable, compute: Callable[[], T]) -> T:
        with self._guard:
            hit = self._values.get(key)
        if hit is not None and hit[0] == version:
            again: T = hit[1]
            return again
        computed = compute()
        with self._guard:
            self._values[key] = (version, computed)
            self._values.move_to_end(key)
            while len(self._values) > self._size:
                old, _ = self._values.popitem(last=False)
                self._locks.pop(old, None)
        return computed


def downsample(
    times_ms: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS_PER_LINE
) -> tuple[list[int], list[float]]:
    """Return at most `max_points` points: per bucket its lowest and highest value, in time order,
    plus the first and last point (so peaks, troughs and the latest value survive)."""
    count = len(times_ms)
    if count <= max_points:
        return [int(t) for t in times_ms], [float(v) for v in values]
    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(1, count - 1, buckets + 1).astype(np.int64)
    chosen = [0]
    for start, end in itertools.pairwise(edges):
        if end <= start:
            continue
        window = values[start:end]
        low, high = start + int(np.argmin(window)), start + int(np.argmax(window))
        chosen.extend(sorted({low, high}))
    chosen.append(count - 1)
    picked = np.unique(np.asarray(chosen, dtype=np.int64))
    return [int(t) for t in times_ms[picked]], [float(v) for v in values[picked]]


def _iso_to_ms(texts: Sequence[str]) -> np.ndarray:
    # Stored as naive UTC text ("2025-10-20 00:05:00.000000"); numpy parses it vectorised.
    if not texts:
        return np.empty(0, dtype=np.int64)
    micros = np.array(texts, dtype="datetime64[us]").astype(np.int64)
    result: np.ndarray = micros // 1000
    return result


def _coin_of(symbol: str) -> str:
    return symbol.split("/")[0].split(":")[0].upper()


def _coin_order(coins: Iterable[str]) -> list[str]:
    rank = {coin: i for i, coin in enumerate(ALPHA_ARENA_COINS)}
    return sorted(set(coins), key=lambda coin: (rank.get(coin, len(rank)), coin))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class ReadModel:
    """The dashboard's view of one database: runs, agents, books, calls, prices."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = engine
        self.clock = clock
        self._cache = _VersionCache()
        self._series: dict[str, _RunSeries] = {}
        self._series_guard = threading.Lock()
        self._candle_series: tuple[float, list[tuple[str, str, str]]] | None = None
        self._version: tuple[float, tuple[int, int]] | None = None
        self._version_lock = threading.Lock()

    # -- versions and runs -----------------------------------------------------------------------

    def version(self) -> tuple[int, int]:
        """Return a marker that changes whenever a cycle, a monitor event or an agent lands.

        Read at most every `VERSION_TTL_S` (a burst of requests shares one read).
        """
        now = time.monotonic()
        known = self._version
        if known is not None and now - known[0] < VERSION_TTL_S:
            return known[1]
        # One reader at a time: the others keep the marker read a moment ago.
        if not self._version_lock.acquire(blocking=known is None):
            assert known is not None
            return known[1]
        try:
            query = select(
                select(func.max(models.AccountSnapshot.id)).scalar_subquery(),
                select(func.max(models.Agent.id)).scalar_subquery(),
            )
            with self.engine.connect() as connection:
                snapshot, agent = connection.execute(query).one()
            marker = (int(snapshot or 0), int(agent or 0))
            self._version = (time.monotonic(), marker)
            return marker
        finally:
            self._version_lock.release()

    def cached(self, key: Hashable, compute: Callable[[], T], *, background: bool = False) -> T:
        """Return `compute()` as of the current data version (computed once per version).

        With `background`, a value one version old is returned at once while it is refreshed.
        """
        return self._cache.get(key, self.version(), compute, background=background)

    def runs(self) -> list[RunInfo]:
        """Return every run, the live one first, then backtests newest first."""
        return self.cached(("runs",), self._load_runs)

    def _load_runs(self) -> list[RunInfo]:
        with self.engine.connect() as connection:
            agents = connection.execute(
                select(models.Agent.id, models.Agent.run_id, models.Agent.name).order_by(
                    models.Agent.id
                )
            ).all()
            spans = {row[0]: self._cycle_span(connection, row[0]) for row in agents}
        names: dict[str, list[str]] = {}
        for _, run_id, name in agents:
            names.setdefault(run_id, []).append(name)
        runs = []
        for run_id, agent_names in names.items():
            mine = [spans[agent_id] for agent_id, owner, _ in agents if owner == run_id]
            firsts = [first for first, _, _, _ in mine if first is not None]
            lasts = [last for _, last, _, _ in mine if last is not None]
            runs.append(
                RunInfo(
                    run_id=run_id,
                    kind="live" if run_id == models.LIVE_RUN_ID else "backtest",
                    agents=tuple(agent_names),
                    first_at=min(firsts, default=None),
                    last_at=max(lasts, default=None),
                    # Every agent records every cycle: the most any agent recorded.
                    cycles=max((count for _, _, count, _ in mine), default=0),
                )
            )
        live = [run for run in runs if run.kind == "live"]
        others = sorted(
            (run for run in runs if run.kind != "live"), key=lambda run: run.run_id, reverse=True
        )
        return live + others

    @staticmethod
    def _cycle_span(
        connection: Any, agent_id: int
    ) -> tuple[datetime | None, datetime | None, int, int]:
        """Return an agent's first and last cycle times, cycle count and last invocation (two
        index seeks on (agent, scheduled time), not a scan of every cycle)."""
        cycle = models.Cycle
        first = connection.execute(
            select(cycle.scheduled_at)
            .where(cycle.agent_id == agent_id)
            .order_by(cycle.scheduled_at)
            .limit(1)
        ).scalar()
        last = connection.execute(
            select(cycle.scheduled_at, cycle.invocation)
            .where(cycle.agent_id == agent_id)
            .order_by(cycle.scheduled_at.desc())
            .limit(1)
        ).first()
        # The invocation counts the agent's cycles (it goes up by one with each).
        invocations = 0 if last is None else int(last[1] or 0)
        return (
            _aware(first),
            None if last is None else _aware(last[0]),
            invocations,
            invocations,
        )

    def run(self, run_id: str) -> RunInfo | None:
        """Return the run, or None when the database has no such run."""
        return next((run for run in self.runs() if run.run_id == run_id), None)

    # -- agents and the leaderboard --------------------------------------------------------------

    def agents(self, run_id: str) -> list[AgentInfo]:
        """Return the run's agents with their latest account value."""
        return self.cached(("agents", run_id), lambda: self._load_agents(run_id))

    def _load_agents(self, run_id: str) -> list[AgentInfo]:
        agent, snapshot = models.Agent, models.AccountSnapshot
        agents = []
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(agent).where(agent.run_id == run_id).order_by(agent.id)
            ).all()
            for row in rows:
                # The newest snapshot is the last written (a slow cycle's may follow a later
                # monitor event's): the highest id among the few latest in time.
                recent = connection.execute(
                    select(snapshot.id, snapshot.equity_usd, snapshot.at)
                    .where(snapshot.agent_id == row.id)
                    .order_by(snapshot.at.desc())
                    .limit(8)
                ).all()
                latest = max(recent, key=lambda r: r[0])[1:] if recent else None
                first, _, _, invocations = self._cycle_span(connection, row.id)
                agents.append(
                    AgentInfo(
                        agent_id=row.id,
                        name=row.name,
                        provider=row.provider,
                        model=row.model,
                        starting_cash_usd=row.starting_cash_usd,
                        equity_usd=row.starting_cash_usd if latest is None else latest[0],
                        created_at=_aware(row.created_at) or self.clock(),
                        first_cycle_at=first,
                        invocations=invocations,
                        last_at=None if latest is None else _aware(latest[1]),
                    )
                )
        return agents

    def agent(self, run_id: str, name: str) -> AgentInfo | None:
        """Return one agent of the run by name, or None."""
        return next((a for a in self.agents(run_id) if a.name == name), None)

    def leaderboard(self, run_id: str) -> list[BoardRow]:
        """Return the run's agents ranked by account value, with the advanced view's figures."""
        return self.cached(
            ("leaderboard", run_id), lambda: self._load_leaderboard(run_id), background=True
        )

    def _load_leaderboard(self, run_id: str) -> list[BoardRow]:
        agents = {agent.name: agent for agent in self.agents(run_id)}
        trades = self.trades(run_id, limit=None)
        usage = self._call_stats([a.agent_id for a in agents.values()])
        entry_stats = self._entry_stats([a.agent_id for a in agents.values()])
        rows = []
        for base in leaderboard(self.engine, run_id):
            agent = agents[base.name]
            mine = [t for t in trades if t.agent == base.name]
            net = [t.net_pnl_usd for t in mine]
            wins = [x for x in net if x > 0]
            losses = [x for x in net if x < 0]
            holding = [t.holding_s for t in mine]
            calls, failures, tokens = usage.get(agent.agent_id, (0, 0, 0))
            avg_leverage, avg_confidence = entry_stats.get(agent.agent_id, (None, None))
            rows.append(
                BoardRow(
                    base=base,
                    starting_cash_usd=agent.starting_cash_usd,
                    total_pnl_usd=base.final_equity - agent.starting_cash_usd,
                    wins=len(wins),
                    losses=len(losses),
                    win_dollars=sum(wins),
                    lose_dollars=sum(losses),
                    biggest_win_usd=max(net) if net else None,
                    biggest_loss_usd=min(net) if net else None,
                    avg_holding_s=float(np.mean(holding)) if holding else None,
                    median_holding_s=float(np.median(holding)) if holding else None,
                    long_trades=sum(1 for t in mine if t.side == "long"),
                    short_trades=sum(1 for t in mine if t.side == "short"),
                    expectancy_usd=sum(net) / len(net) if net else None,
                    avg_leverage=avg_leverage,
                    avg_confidence=avg_confidence,
                    calls=calls,
                    failures=failures,
                    tokens=tokens,
                    is_benchmark=agent.is_benchmark,
                )
            )
        return rows

    def _call_stats(self, agent_ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
        """Return per agent: calls recorded, calls that failed, tokens in and out."""
        call = models.LlmCall
        answered = ("ok", "cache_hit", "parse_error")
        with self.engine.connect() as connection:
            return {
                int(row[0]): (int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))
                for row in connection.execute(
                    select(
                        call.agent_id,
                        func.count(call.id),
                        func.sum(case((call.outcome.not_in(answered), 1), else_=0)),
                        func.sum(call.prompt_tokens + call.completion_tokens),
                    )
                    .where(call.agent_id.in_(list(agent_ids)))
                    .group_by(call.agent_id)
                )
            }

    def _entry_stats(self, agent_ids: Sequence[int]) -> dict[int, tuple[float | None, ...]]:
        position = models.Position
        with self.engine.connect() as connection:
            return {
                row[0]: (
                    None if row[1] is None else float(row[1]),
                    None if row[2] is None else float(row[2]),
                )
                for row in connection.execute(
                    select(
                        position.agent_id,
                        func.avg(position.leverage),
                        func.avg(position.confidence),
                    )
                    .where(position.agent_id.in_(list(agent_ids)))
                    .group_by(position.agent_id)
                )
            }

    # -- account values --------------------------------------------------------------------------

    def _run_series(self, run_id: str) -> dict[int, _Series]:
        """Return every agent's account values, reading only the snapshots new since last time."""
        with self._series_guard:
            state = self._series.setdefault(run_id, _RunSeries())
        agent_ids = [agent.agent_id for agent in self.agents(run_id)]
        snapshot = models.AccountSnapshot
        with state.lock:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    select(
                        snapshot.id,
                        snapshot.agent_id,
                        type_coerce(snapshot.at, String),
                        snapshot.equity_usd,
                        snapshot.realized_pnl_usd,
                        snapshot.unrealized_pnl_usd,
                    )
                    .where(snapshot.id > state.last_snapshot_id, snapshot.agent_id.in_(agent_ids))
                    .order_by(snapshot.id)
                ).all()
            if rows:
                ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
                owners = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
                times = _iso_to_ms([row[2] for row in rows])
                values = np.array([row[3:6] for row in rows], dtype=np.float64)
                for agent_id in np.unique(owners):
                    mask = owners == agent_id
                    state.by_agent.setdefault(int(agent_id), _Series()).extend(
                        times[mask], values[mask]
                    )
                state.last_snapshot_id = int(ids[-1])
            return {
                agent_id: _Series(series.times_ms, series.values)
                for agent_id, series in state.by_agent.items()
            }

    def lines(
        self,
        run_id: str,
        *,
        window: timedelta | None = None,
        max_points: int = MAX_POINTS_PER_LINE,
    ) -> list[Line]:
        """Return one account-value line per agent and the buy-and-hold line, downsampled.

        `window` keeps the last stretch of the run (72 or 24 hours), measured from its newest point.
        """
        key = ("lines", run_id, None if window is None else window.total_seconds(), max_points)
        return self.cached(key, lambda: self._load_lines(run_id, window, max_points))

    def _load_lines(self, run_id: str, window: timedelta | None, max_points: int) -> list[Line]:
        agents = self.agents(run_id)
        series = self._run_series(run_id)
        ends = [s.times_ms[-1] for s in series.values() if len(s.times_ms)]
        if not ends:
            return []
        end_ms = int(max(ends))
        since_ms = None if window is None else end_ms - int(window.total_seconds() * 1000)
        lines: list[Line] = []
        for agent in agents:
            found = series.get(agent.agent_id)
            if found is None or not len(found.times_ms):
                continue
            times, values = found.times_ms, found.equity
            if since_ms is not None:
                keep = times >= since_ms
                times, values = times[keep], values[keep]
            picked_t, picked_v = downsample(times, values, max_points)
            lines.append(
                Line(
                    key=agent.name,
                    label=agent.name,
                    kind="benchmark" if agent.is_benchmark else "agent",
                    times_ms=picked_t,
                    values=picked_v,
                    starting_cash_usd=agent.starting_cash_usd,
                )
            )
        benchmark = self._buy_and_hold(run_id, agents, series, since_ms, max_points)
        if benchmark is not None:
            lines.append(benchmark)
        return lines

    def _buy_and_hold(
        self,
        run_id: str,
        agents: Sequence[AgentInfo],
        series: dict[int, _Series],
        since_ms: int | None,
        max_points: int,
    ) -> Line | None:
        """Equal weight in every coin at the run's first value, no fees: the backtest report's
        benchmark, drawn from the cached candles (None when they do not cover the run)."""
        starts = [s.times_ms[0] for s in series.values() if len(s.times_ms)]
        ends = [s.times_ms[-1] for s in series.values() if len(s.times_ms)]
        coins = self.coins(run_id)
        if not starts or not coins or not agents:
            return None
        start_ms, end_ms = int(min(starts)), int(max(ends))
        ratios = []
        grid: np.ndarray | None = None
        for coin in coins:
            times, closes = self._candle_closes(coin, start_ms, end_ms)
            inside = (times >= start_ms) & (times <= end_ms)
            if inside.sum() < 2 or times[inside][0] > start_ms + 86_400_000:
                return None
            if grid is None:
                grid = times[inside]
            at = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(times) - 1)
            ratios.append(closes[at] / closes[at[0]])
        assert grid is not None
        cash = agents[0].starting_cash_usd
        values = cash * np.mean(np.vstack(ratios), axis=0)
        if since_ms is not None:
            keep = grid >= since_ms
            grid, values = grid[keep], values[keep]
        picked_t, picked_v = downsample(grid, values, max_points)
        return Line(
            key="buy_and_hold",
            label="buy & hold",
            kind="benchmark",
            times_ms=picked_t,
            values=picked_v,
            starting_cash_usd=cash,
        )

    # -- prices ----------------------------------------------------------------------------------

    def coins(self, run_id: str) -> list[str]:
        """Return the coins the run trades: those its agents last decided on, or hold."""
        return self.cached(("coins", run_id), lambda: self._load_coins(run_id))

    def _load_coins(self, run_id: str) -> list[str]:
        cycle, decision, position = models.Cycle, models.Decision, models.Position
        agent_ids = [agent.agent_id for agent in self.agents(run_id)]
        coins: set[str] = set()
        with self.engine.connect() as connection:
            for agent_id in agent_ids:
                last = connection.execute(
                    select(cycle.id)
                    .where(cycle.agent_id == agent_id)
                    .order_by(cycle.scheduled_at.desc())
                    .limit(1)
                ).scalar()
                if last is not None:
                    coins.update(
                        connection.scalars(select(decision.coin).where(decision.cycle_id == last))
                    )
            coins.update(
                connection.scalars(
                    select(position.coin).where(position.agent_id.in_(agent_ids)).distinct()
                )
            )
        return _coin_order(coin for coin in coins if coin and coin != "?")

    def _candle_sources(self) -> list[tuple[str, str, str]]:
        cached = self._candle_series
        now = self.clock().timestamp()
        if cached is not None and now - cached[0] < _PRICE_SERIES_TTL_S:
            return cached[1]
        candle = models.Candle
        with self.engine.connect() as connection:
            found = [
                (row[0], row[1], row[2])
                for row in connection.execute(
                    select(candle.exchange, candle.symbol, candle.timeframe).distinct()
                )
            ]
        self._candle_series = (now, found)
        return found

    def _candle_closes(
        self, coin: str, start_ms: int, end_ms: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return close times and closes of the finest cached series covering [start, end]."""
        candle = models.Candle
        best: tuple[np.ndarray, np.ndarray] | None = None
        for exchange, symbol, timeframe in self._candle_sources():
            if _coin_of(symbol) != coin:
                continue
            with self.engine.connect() as connection:
                rows = connection.execute(
                    select(candle.open_time_ms, candle.close)
                    .where(
                        candle.exchange == exchange,
                        candle.symbol == symbol,
                        candle.timeframe == timeframe,
                        candle.open_time_ms >= start_ms - 86_400_000,
                        candle.open_time_ms <= end_ms,
                    )
                    .order_by(candle.open_time_ms)
                ).all()
            if len(rows) < 2:
                continue
            times = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            closes = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
            # A candle's close is the price at its end: the next open time.
            step = int(np.median(np.diff(times)))
            times = times + step
            if best is None or len(times) > len(best[0]):
                best = (times, closes)
        if best is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return best

    def prices(self, run_id: str) -> dict[str, Price]:
        """Return each traded coin's latest price: the newest cached candle, else the last fill."""
        return self.cached(("prices", run_id), lambda: self._load_prices(run_id))

    def _load_prices(self, run_id: str) -> dict[str, Price]:
        run = self.run(run_id)
        end = run.last_at if run is not None and run.kind == "backtest" else self.clock()
        end_ms = _ms(end or self.clock()) + 60_000
        prices: dict[str, Price] = {}
        missing = []
        for coin in self.coins(run_id):
            times, closes = self._candle_closes(coin, end_ms - 2 * 86_400_000, end_ms)
            usable = times <= end_ms + 86_400_000
            if usable.any():
                last = int(np.flatnonzero(usable)[-1])
                prices[coin] = Price(
                    coin=coin,
                    price=float(closes[last]),
                    at=datetime.fromtimestamp(times[last] / 1000, tz=UTC),
                    source="candles",
                )
            else:
                missing.append(coin)
        if missing:
            fill = models.Fill
            agent_ids = [agent.agent_id for agent in self.agents(run_id)]
            with self.engine.connect() as connection:
                for coin in missing:
                    rows = [
                        connection.execute(
                            select(fill.reference_price, fill.filled_at)
                            .where(fill.agent_id == agent_id, fill.coin == coin)
                            .order_by(fill.filled_at.desc())
                            .limit(1)
                        ).first()
                        for agent_id in agent_ids
                    ]
                    found = [row for row in rows if row is not None]
                    if found:
                        price, at = max(found, key=lambda row: row[1])
                        prices[coin] = Price(
                            coin, float(price), _aware(at) or self.clock(), "fills"
                        )
        return prices

    def price_line(
        self, run_id: str, coin: str, *, max_points: int = MAX_POINTS_PER_LINE
    ) -> tuple[list[int], list[float]]:
        """Return the coin's price over the run (from the cached candles), downsampled."""
        run = self.run(run_id)
        if run is None or run.first_at is None or run.last_at is None:
            return [], []
        start_ms, end_ms = _ms(run.first_at), _ms(run.last_at)
        times, closes = self.cached(
            ("price_line", run_id, coin),
            lambda: self._candle_closes(coin, start_ms, end_ms),
        )
        keep = times >= start_ms
        return downsample(times[keep], closes[keep], max_points)

    # -- positions and trades --------------------------------------------------------------------

    def positions(self, run_id: str, *, agent: str | None = None) -> list[PositionView]:
        """Return the open positions (of one agent or all), newest first."""
        every = self.cached(("positions", run_id), lambda: self._load_positions(run_id))
        return [p for p in every if agent is None or p.agent == agent]

    def _load_positions(self, run_id: str) -> list[PositionView]:
        position, agent = models.Position, models.Agent
        prices = self.prices(run_id)
        run = self.run(run_id)
        now = (run.last_at if run is not None and run.kind == "backtest" else None) or self.clock()
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(position, agent.name)
                .join(agent, agent.id == position.agent_id)
                .where(agent.run_id == run_id, position.status == "open")
                .order_by(position.opened_at.desc(), position.id.desc())
            ).all()
        views = []
        for row in rows:
            price = prices.get(row.coin)
            direction = 1.0 if row.side == "long" else -1.0
            opened = _aware(row.opened_at) or now
            views.append(
                PositionView(
                    position_id=row.id,
                    agent=row.name,
                    coin=row.coin,
                    side=row.side,
                    quantity=row.quantity,
                    entry_price=row.entry_price,
                    current_price=None if price is None else price.price,
                    price_at=None if price is None else price.at,
                    unrealized_pnl_usd=None
                    if price is None
                    else direction * (price.price - row.entry_price) * row.quantity,
                    leverage=row.leverage,
                    margin_usd=row.margin_usd,
                    liquidation_price=row.liquidation_price,
                    profit_target=row.profit_target,
                    stop_loss=row.stop_loss,
                    invalidation_condition=row.invalidation_condition or "",
                    confidence=row.confidence,
                    risk_usd=row.risk_usd,
                    justification=row.justification or "",
                    entry_fee_usd=row.entry_fee_usd,
                    funding_usd=row.funding_usd,
                    opened_at=opened,
                    holding_s=max(0.0, (now - opened).total_seconds()),
                )
            )
        return views

    def trades(
        self, run_id: str, *, agent: str | None = None, limit: int | None = 100
    ) -> list[TradeView]:
        """Return the closed trades (of one agent or all), newest first."""
        every = self.cached(("trades", run_id), lambda: self._load_trades(run_id))
        chosen = [t for t in every if agent is None or t.agent == agent]
        return chosen if limit is None else chosen[:limit]

    def _load_trades(self, run_id: str) -> list[TradeView]:
        position, agent, fill = models.Position, models.Agent, models.Fill
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(position, agent.name)
                .join(agent, agent.id == position.agent_id)
                .where(agent.run_id == run_id, position.status == "closed")
                .order_by(position.closed_at.desc(), position.id.desc())
            ).all()
            fill_ids: dict[tuple[int, bool], int] = {}
            for position_id, reason, fill_id in connection.execute(
                select(fill.position_id, fill.reason, fill.id)
                .join(agent, agent.id == fill.agent_id)
                .where(agent.run_id == run_id, fill.position_id.is_not(None))
            ):
                if position_id is not None:
                    fill_ids[(int(position_id), reason == "entry")] = int(fill_id)
        return [
            TradeView(
                position_id=row.id,
                agent=row.name,
                coin=row.coin,
                side=row.side,
                quantity=row.quantity,
                leverage=row.leverage,
                entry_price=row.entry_price,
                exit_price=row.exit_price or 0.0,
                opened_at=_aware(row.opened_at) or self.clock(),
                closed_at=_aware(row.closed_at) or self.clock(),
                entry_fee_usd=row.entry_fee_usd,
                exit_fee_usd=row.exit_fee_usd or 0.0,
                funding_usd=row.funding_usd,
                gross_pnl_usd=row.gross_pnl_usd or 0.0,
                net_pnl_usd=row.net_pnl_usd or 0.0,
                exit_reason=row.exit_reason or "",
                confidence=row.confidence,
                margin_usd=row.margin_usd,
                profit_target=row.profit_target,
                stop_loss=row.stop_loss,
                invalidation_condition=row.invalidation_condition or "",
                entry_fill_id=fill_ids.get((row.id, True), 0),
                exit_fill_id=fill_ids.get((row.id, False), 0),
            )
            for row in rows
        ]

    # -- model calls -----------------------------------------------------------------------------

    def calls(
        self,
        run_id: str,
        *,
        agent: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[CallCard]:
        """Return the latest model calls (answered and failed), newest first."""
        key = ("calls", run_id, agent, limit, before_id)
        return self.cached(key, lambda: self._load_calls(run_id, agent, limit, before_id))

    def _load_calls(
        self,
        run_id: str,
        agent: str | None,
        limit: int,
        before_id: int | None,
        only_id: int | None = None,
    ) -> list[CallCard]:
        call, cycle = models.LlmCall, models.Cycle
        agents = {a.agent_id: a for a in self.agents(run_id) if agent is None or a.name == agent}
        rows: list[Any] = []
        with self.engine.connect() as connection:
            for agent_id in agents:
                query = (
                    select(
                        call.id,
                        call.agent_id,
                        call.cycle_id,
                        call.provider,
                        call.model,
                        call.model_requested,
                        call.created_at,
                        call.outcome,
                        call.error,
                        call.cache_hit,
                        call.latency_ms,
                        call.prompt_tokens,
                        call.completion_tokens,
                        call.reasoning_z,
                        call.response_text,
                        call.messages_z.is_not(None).label("has_prompt"),
                        cycle.invocation,
                        cycle.scheduled_at,
                    )
                    .outerjoin(cycle, cycle.id == call.cycle_id)
                    .where(call.agent_id == agent_id)
                    .order_by(call.created_at.desc(), call.id.desc())
                    .limit(limit)
                )
                if before_id is not None:
                    query = query.where(call.id < before_id)
                if only_id is not None:
                    query = query.where(call.id == only_id)
                rows.extend(connection.execute(query).all())
        rows.sort(key=lambda row: (row.created_at, row.id), reverse=True)
        rows = rows[:limit]
        decisions = self._decisions([row.cycle_id for row in rows if row.model is not None])
        cards = []
        for row in rows:
            reasoning = decompress_text(row.reasoning_z)
            found = decisions.get(row.cycle_id, ()) if row.model is not None else ()
            cards.append(
                CallCard(
                    call_id=row.id,
                    agent=agents[row.agent_id].name,
                    provider=row.provider,
                    model=row.model or row.model_requested,
                    created_at=_aware(row.created_at) or self.clock(),
                    outcome=row.outcome,
                    error=row.error,
                    cache_hit=bool(row.cache_hit),
                    latency_ms=int(row.latency_ms or 0),
                    prompt_tokens=int(row.prompt_tokens or 0),
                    completion_tokens=int(row.completion_tokens or 0),
                    invocation=row.invocation,
                    scheduled_at=_aware(row.scheduled_at),
                    summary=_summary(reasoning, found, row.response_text),
                    decisions=found,
                    has_prompt=bool(row.has_prompt),
                )
            )
        return cards

    def _decisions(self, cycle_ids: Sequence[int | None]) -> dict[int, tuple[DecisionView, ...]]:
        wanted = sorted({cycle_id for cycle_id in cycle_ids if cycle_id is not None})
        if not wanted:
            return {}
        decision, fill = models.Decision, models.Fill
        with self.engine.connect() as connection:
            prices = {
                (row[0], row[1]): float(row[2])
                for row in connection.execute(
                    select(fill.cycle_id, fill.coin, fill.price).where(fill.cycle_id.in_(wanted))
                )
            }
            found: dict[int, list[DecisionView]] = {}
            for row in connection.execute(
                select(decision).where(decision.cycle_id.in_(wanted)).order_by(decision.id)
            ):
                found.setdefault(row.cycle_id, []).append(
                    DecisionView(
                        coin=row.coin,
                        signal=row.signal,
                        outcome=row.outcome,
                        reason=row.reason,
                        quantity=row.quantity,
                        leverage=row.leverage,
                        profit_target=row.profit_target,
                        stop_loss=row.stop_loss,
                        invalidation_condition=row.invalidation_condition,
                        confidence=row.confidence,
                        risk_usd=row.risk_usd,
                        justification=row.justification,
                        filled_quantity=row.filled_quantity,
                        fill_price=prices.get((row.cycle_id, row.coin))
                        if row.outcome == "executed"
                        else None,
                    )
                )
        return {key: tuple(value) for key, value in found.items()}

    def call_detail(self, run_id: str, call_id: int) -> CallDetail | None:
        """Return one call of the run in full, or None when the run has no such call."""
        return self._load_call_detail(run_id, call_id)

    def _load_call_detail(self, run_id: str, call_id: int) -> CallDetail | None:
        call, agent = models.LlmCall, models.Agent
        with self.engine.connect() as connection:
            row = connection.execute(
                select(
                    call.id, call.agent_id, call.created_at, call.reasoning_z, call.response_text
                )
                .join(agent, agent.id == call.agent_id)
                .where(call.id == call_id, agent.run_id == run_id)
            ).first()
        if row is None:
            return None
        name = next((a.name for a in self.agents(run_id) if a.agent_id == row.agent_id), None)
        cards = self._load_calls(run_id, name, 1, None, only_id=call_id)
        if not cards:
            return None
        messages = queries.call_messages(self.engine, call_id)
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        user = "\n\n".join(m.content for m in messages if m.role == "user")
        link, image = models.LlmCallImage, models.ChartImage
        with self.engine.connect() as connection:
            images = connection.execute(
                select(link.position, image.kind, image.caption, image.width_px, image.height_px)
                .join(image, image.sha256 == link.image_sha256)
                .where(link.llm_call_id == call_id)
                .order_by(link.position)
            ).all()
        return CallDetail(
            card=cards[0],
            system_prompt=system,
            user_prompt=user,
            reasoning=decompress_text(row.reasoning_z),
            response_text=row.response_text or "",
            images=tuple(CallImage(i.position + 1, *i[1:]) for i in images),
        )

    def call_image(self, run_id: str, call_id: int, number: int) -> bytes | None:
        """Return the PNG a call of the run sent as its `number`th image, or None."""
        call, agent = models.LlmCall, models.Agent
        with self.engine.connect() as connection:
            found = connection.execute(
                select(call.id)
                .join(agent, agent.id == call.agent_id)
                .where(call.id == call_id, agent.run_id == run_id)
            ).first()
        if found is None:
            return None
        images = queries.call_images(self.engine, [call_id]).get(call_id, [])
        return next((i.png for i in images if i.position + 1 == number), None)

    def cycles(self, run_id: str, *, agent: str | None = None, limit: int = 50) -> list[Any]:
        """Return the latest agent-cycles: when, status, error and invocation."""
        cycle, agent_table = models.Cycle, models.Agent
        query = (
            select(
                cycle.id,
                agent_table.name,
                cycle.scheduled_at,
                cycle.invocation,
                cycle.status,
                cycle.error,
                cycle.started_at,
                cycle.finished_at,
            )
            .join(agent_table, agent_table.id == cycle.agent_id)
            .where(agent_table.run_id == run_id)
            .order_by(cycle.scheduled_at.desc(), cycle.id.desc())
            .limit(limit)
        )
        if agent is not None:
            query = query.where(agent_table.name == agent)
        with self.engine.connect() as connection:
            return list(connection.execute(query).all())

    # -- analytics -------------------------------------------------------------------------------

    def facts(self, run_id: str) -> list[AgentFacts]:
        """Return, per agent, what the analytics tables are computed from."""
        return self.cached(("facts", run_id), lambda: self._load_facts(run_id), background=True)

    def _load_facts(self, run_id: str) -> list[AgentFacts]:
        decision, cycle, position, call = (
            models.Decision,
            models.Cycle,
            models.Position,
            models.LlmCall,
        )
        trades = self.trades(run_id, limit=None)
        positions = self.positions(run_id)
        facts = []
        with self.engine.connect() as connection:
            for agent in self.agents(run_id):
                signals = {
                    row[0]: SignalStats(
                        count=int(row[1]),
                        confidence_mean=_float(row[2]),
                        confidence_sq_mean=_float(row[3]),
                        leverage_mean=_float(row[4]),
                        leverage_sq_mean=_float(row[5]),
                    )
                    for row in connection.execute(
                        select(
                            decision.signal,
                            func.count(decision.id),
                            func.avg(decision.confidence),
                            func.avg(decision.confidence * decision.confidence),
                            func.avg(decision.leverage),
                            func.avg(decision.leverage * decision.leverage),
                        )
                        .join(cycle, cycle.id == decision.cycle_id)
                        .where(cycle.agent_id == agent.agent_id)
                        .group_by(decision.signal)
                    )
                }
                entries = connection.execute(
                    select(position.leverage, position.confidence).where(
                        position.agent_id == agent.agent_id
                    )
                ).all()
                times = _iso_to_ms(
                    list(
                        connection.scalars(
                            select(type_coerce(cycle.scheduled_at, String))
                            .where(cycle.agent_id == agent.agent_id)
                            .order_by(cycle.scheduled_at)
                        )
                    )
                )
                last_call = connection.execute(
                    select(call.id, call.created_at)
                    .where(call.agent_id == agent.agent_id)
                    .order_by(call.created_at.desc(), call.id.desc())
                    .limit(1)
                ).first()
                facts.append(
                    AgentFacts(
                        agent=agent,
                        trades=tuple(t for t in trades if t.agent == agent.name),
                        open_positions=tuple(p for p in positions if p.agent == agent.name),
                        signals=signals,
                        entry_leverages=tuple(int(r[0]) for r in entries),
                        entry_confidences=tuple(float(r[1]) for r in entries if r[1] is not None),
                        cycle_times_s=tuple(float(t) / 1000 for t in times),
                        last_call_id=None if last_call is None else int(last_call[0]),
                        last_call_at=None if last_call is None else _aware(last_call[1]),
                        equity_usd=agent.equity_usd,
                    )
                )
        return facts

    def account_points(
        self, run_id: str
    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Return every agent's books over time by name: times (ms), account value, realized and
        unrealized PnL."""
        series = self._run_series(run_id)
        found = {}
        for agent in self.agents(run_id):
            if agent.agent_id in series:
                one = series[agent.agent_id]
                found[agent.name] = (
                    one.times_ms,
                    one.values[:, 0],
                    one.values[:, 1],
                    one.values[:, 2],
                )
        return found

    def conversation_prompts(self, call_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """Return (user prompt, reasoning) of each call; recorded calls never change."""
        found: dict[int, tuple[str, str]] = {}
        for call_id in call_ids:
            found[call_id] = self._cache.get(
                ("prompt", call_id), 0, partial(self._load_prompt, call_id)
            )
        return found

    def _load_prompt(self, call_id: int) -> tuple[str, str]:
        messages = queries.call_messages(self.engine, call_id)
        with self.engine.connect() as connection:
            reasoning = connection.execute(
                select(models.LlmCall.reasoning_z).where(models.LlmCall.id == call_id)
            ).scalar()
        user = "\n\n".join(m.content for m in messages if m.role == "user")
        return user, decompress_text(reasoning)


def _summary(reasoning: str, decisions: Sequence[DecisionView], answer: str | None) -> str:
    """Return the gist of a call: its reasoning, or (a model that gave none) what it decided."""
    if reasoning.strip():
        return queries.summarize_reasoning(reasoning)
    if not decisions:
        return queries.summarize_reasoning(answer or "")
    acted = [d for d in decisions if d.signal != "hold"]
    held = [d.coin for d in decisions if d.signal == "hold"]
    parts = [
        f"{d.signal.replace('_', ' ')} {d.coin}"
        + (f" (filled at {d.fill_price:.6g})" if d.fill_price is not None else f" ({d.outcome})")
        for d in acted
    ]
    if held:
        parts.append(f"hold {', '.join(held)}")
    return "No reasoning given. Decided: " + "; ".join(parts) + "."


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
