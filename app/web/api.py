"""The JSON API: nof1's read API (`/api/...`) and our own, richer one (`/api/v1/...`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, TypeAdapter

from app.web import nof1
from app.web.readmodel import (
    CARD_LIMIT_MAX,
    AgentInfo,
    BoardRow,
    CallCard,
    CallDetail,
    Line,
    PositionView,
    Price,
    ReadModel,
    RunInfo,
    TradeView,
)

RANGES: Final[dict[str, timedelta | None]] = {
    "all": None,
    "72h": timedelta(hours=72),
    "24h": timedelta(hours=24),
}

RunQuery = Annotated[
    str,
    Query(
        max_length=64,
        description="Run to read: `live` (the default) or a backtest's run id.",
    ),
]
AgentQuery = Annotated[str | None, Query(max_length=64, description="Only this agent (its name).")]
LimitQuery = Annotated[int, Query(ge=1, le=CARD_LIMIT_MAX, description="Most items to return.")]
RangeQuery = Annotated[
    Literal["all", "72h", "24h"],
    Query(description="The whole run, or its last 72 or 24 hours."),
]


class Problem(BaseModel):
    """One invalid parameter: where it is and what is wrong with it."""

    loc: list[str]
    msg: str


class ErrorBody(BaseModel):
    """Every error is JSON: what went wrong, and for bad parameters which ones."""

    error: str
    detail: list[Problem] | None = None


ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorBody, "description": "A token is required (SERVE_TOKEN)."},
    404: {"model": ErrorBody, "description": "No such run, agent, coin or call."},
    422: {"model": ErrorBody, "description": "Invalid query or path parameters."},
}


def read_model(request: Request) -> ReadModel:
    """Return the app's read model."""
    model: ReadModel = request.app.state.read_model
    return model


def default_run(request: Request) -> str:
    """Return the run shown when a request names none (`arena serve --run`)."""
    run: str = request.app.state.default_run
    return run


def require_run(model: ReadModel, run_id: str) -> RunInfo:
    """Return the run, or answer 404 naming the runs there are."""
    run = model.run(run_id)
    if run is None:
        known = ", ".join(r.run_id for r in model.runs()[:10]) or "none yet"
        raise HTTPException(status_code=404, detail=f"no run {run_id!r} (runs: {known})")
    return run


def require_agent(model: ReadModel, run_id: str, name: str | None) -> AgentInfo | None:
    """Return the agent (None when no filter is given), or answer 404."""
    if name is None:
        return None
    agent = model.agent(run_id, name)
    if agent is None:
        names = ", ".join(a.name for a in model.agents(run_id)) or "none"
        raise HTTPException(
            status_code=404, detail=f"no agent {name!r} in run {run_id!r} (agents: {names})"
        )
    return agent


@cache
def _adapter(shape: Any) -> TypeAdapter[Any]:
    return TypeAdapter(shape)


def cached_json(
    model: ReadModel,
    key: Hashable,
    build: Callable[[], Any],
    *,
    shape: Any = None,
    background: bool = False,
) -> Response:
    """Answer with JSON encoded once per data version (big answers cost a lookup, not an
    encoding); `shape` is the response model, None for nof1's plain documents."""

    def encode() -> bytes:
        payload = build()
        if shape is None:
            return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        encoded: bytes = _adapter(shape).dump_json(payload)
        return encoded

    body = model.cached(("json", key), encode, background=background)
    return Response(content=body, media_type="application/json")


# -- nof1's read API ---------------------------------------------------------------------------

nof1_router = APIRouter(prefix="/api", tags=["nof1-compatible"], responses=ERRORS)


def _run(request: Request, run: str | None) -> tuple[ReadModel, str]:
    model = read_model(request)
    run_id = run or default_run(request)
    require_run(model, run_id)
    return model, run_id


@nof1_router.get("/crypto-prices", summary="Latest price of each traded coin")
def crypto_prices(request: Request, run: RunQuery | None = None) -> dict[str, Any]:
    """nof1's `/api/crypto-prices`."""
    model, run_id = _run(request, run)
    return nof1.crypto_prices(model.prices(run_id), now=model.clock())


JsonObject = dict[str, Any]


@nof1_router.get("/positions", response_model=JsonObject, summary="Open positions per model")
def positions(
    request: Request,
    run: RunQuery | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most positions.")] = 1000,
) -> Response:
    """nof1's `/api/positions?limit=`: each model's open positions, with exit plans."""
    model, run_id = _run(request, run)
    return cached_json(
        model,
        ("positions", run_id, limit),
        lambda: nof1.positions(model.agents(run_id), model.positions(run_id), limit=limit),
    )


@nof1_router.get("/trades", response_model=JsonObject, summary="Completed trades, newest first")
def trades(request: Request, run: RunQuery | None = None) -> Response:
    """nof1's `/api/trades`."""
    model, run_id = _run(request, run)
    return cached_json(
        model,
        ("trades", run_id),
        lambda: nof1.trades(model.trades(run_id, limit=None), now=model.clock()),
    )


@nof1_router.get("/account-totals", response_model=JsonObject, summary="Hourly account values")
def account_totals(
    request: Request,
    run: RunQuery | None = None,
    last_hourly_marker: Annotated[
        int | None,
        Query(
            alias="lastHourlyMarker",
            ge=0,
            le=10_000_000,
            description="Only the hours after this one (hours since the model's start).",
        ),
    ] = None,
) -> Response:
    """nof1's `/api/account-totals?lastHourlyMarker=`: per model, the last account value of each
    hour; the newest entry carries the open positions."""
    model, run_id = _run(request, run)
    return cached_json(
        model,
        ("account-totals", run_id, last_hourly_marker),
        lambda: nof1.account_totals(
            model.agents(run_id),
            model.account_points(run_id),
            model.positions(run_id),
            last_hourly_marker=last_hourly_marker,
            now=model.clock(),
        ),
        background=True,
    )


@nof1_router.get("/since-inception-values", response_model=JsonObject, summary="Model starts")
def since_inception_values(request: Request, run: RunQuery | None = None) -> JsonObject:
    """nof1's `/api/since-inception-values`."""
    model, run_id = _run(request, run)
    return nof1.since_inception(model.agents(run_id), now=model.clock())


@nof1_router.get("/leaderboard", response_model=JsonObject, summary="Ranked by account value")
def leaderboard(request: Request, run: RunQuery | None = None) -> Response:
    """nof1's `/api/leaderboard`."""
    model, run_id = _run(request, run)
    return cached_json(
        model,
        ("leaderboard", run_id),
        lambda: nof1.leaderboard(model.leaderboard(run_id)),
        background=True,
    )


@nof1_router.get("/analytics", response_model=JsonObject, summary="Every model's analytics")
def analytics(request: Request, run: RunQuery | None = None) -> Response:
    """nof1's `/api/analytics`."""
    model, run_id = _run(request, run)
    return cached_json(
        model,
        ("analytics", run_id),
        lambda: nof1.analytics(model.facts(run_id), now=model.clock()),
        background=True,
    )


@nof1_router.get("/analytics/{model_id}", response_model=JsonObject, summary="One model's")
def model_analytics(
    request: Request,
    model_id: Annotated[str, Path(max_length=64, description="The agent's name.")],
    run: RunQuery | None = None,
) -> Response:
    """nof1's `/api/analytics/{modelId}`."""
    model, run_id = _run(request, run)
    require_agent(model, run_id, model_id)

    def build() -> JsonObject:
        facts = next(f for f in model.facts(run_id) if f.agent.name == model_id)
        return nof1.model_analytics(facts, now=model.clock())

    return cached_json(model, ("analytics", run_id, model_id), build, background=True)


@nof1_router.get("/conversations", response_model=JsonObject, summary="Latest model calls")
def conversations(
    request: Request,
    run: RunQuery | None = None,
    limit: Annotated[int, Query(ge=1, le=CARD_LIMIT_MAX, description="Most calls.")] = 100,
) -> Response:
    """nof1's `/api/conversations`: the latest answered calls with prompt, reasoning and
    decisions (failed calls are in `/api/v1/runs/{run}/calls`)."""
    model, run_id = _run(request, run)

    def build() -> JsonObject:
        cards = [
            c for c in model.calls(run_id, limit=limit) if c.outcome != "error" and c.decisions
        ]
        prompts = model.conversation_prompts([card.call_id for card in cards])
        return nof1.conversations(cards, prompts, run_id=run_id)

    return cached_json(model, ("conversations", run_id, limit), build, background=True)


# -- our own API --------------------------------------------------------------------------------

v1_router = APIRouter(prefix="/api/v1", tags=["arena"], responses=ERRORS)

RunPath = Annotated[str, Path(max_length=64, description="`live` or a backtest's run id.")]


@dataclass(frozen=True, slots=True)
class Version:
    """What changed last: the live page polls this and redraws when it moves."""

    version: str
    run: str
    cycles: int
    last_cycle_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunDetail:
    """A run with its agents and its leaderboard."""

    run: RunInfo
    agents: list[AgentInfo]
    leaderboard: list[BoardRow]


@dataclass(frozen=True, slots=True)
class Chart:
    """The account-value chart: one line per agent and the buy-and-hold line."""

    run: str
    range: str
    lines: list[Line]


@dataclass(frozen=True, slots=True)
class PriceLine:
    """A coin's price over the run and one agent's trades on it."""

    coin: str
    times_ms: list[int]
    prices: list[float]
    trades: list[TradeView]
    positions: list[PositionView]


@dataclass(frozen=True, slots=True)
class CycleView:
    """One agent-cycle: when, how it ended and why."""

    cycle_id: int
    agent: str
    scheduled_at: datetime
    invocation: int
    status: str
    error: str | None
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class DecisionItem:
    """One decision of a call, with the call it came from."""

    call_id: int
    agent: str
    created_at: datetime
    coin: str
    signal: str
    outcome: str
    reason: str | None
    fill_price: float | None


@v1_router.get("/version", response_model=Version, summary="Change marker for live updates")
def version(request: Request, run: RunQuery | None = None) -> Version:
    """Return a marker that changes with every recorded cycle, and the run's last cycle."""
    model = read_model(request)
    run_id = run or default_run(request)
    info = require_run(model, run_id)
    marker = model.version()
    return Version(
        version=f"{marker[0]}.{marker[1]}",
        run=run_id,
        cycles=info.cycles,
        last_cycle_at=info.last_at,
    )


@v1_router.get("/runs", response_model=list[RunInfo], summary="Every run in the database")
def runs(request: Request) -> list[RunInfo]:
    """Return the live run first, then the backtests, newest first."""
    return read_model(request).runs()


@v1_router.get("/runs/{run_id}", response_model=RunDetail, summary="A run and its standings")
def run_detail(request: Request, run_id: RunPath) -> RunDetail:
    """Return the run, its agents and its leaderboard."""
    model = read_model(request)
    info = require_run(model, run_id)
    return RunDetail(run=info, agents=model.agents(run_id), leaderboard=model.leaderboard(run_id))


@v1_router.get("/runs/{run_id}/agents", response_model=list[AgentInfo], summary="Agents")
def agents(request: Request, run_id: RunPath) -> list[AgentInfo]:
    """Return the run's agents with their latest account value."""
    model = read_model(request)
    require_run(model, run_id)
    return model.agents(run_id)


@v1_router.get("/runs/{run_id}/leaderboard", response_model=list[BoardRow], summary="Leaderboard")
def run_leaderboard(request: Request, run_id: RunPath) -> Response:
    """Return the agents ranked by account value, with the advanced figures."""
    model = read_model(request)
    require_run(model, run_id)
    return cached_json(
        model,
        ("v1-leaderboard", run_id),
        lambda: model.leaderboard(run_id),
        shape=list[BoardRow],
        background=True,
    )


@v1_router.get("/runs/{run_id}/chart", response_model=Chart, summary="Account-value chart")
def chart(request: Request, run_id: RunPath, range: RangeQuery = "all") -> Response:
    """Return each agent's account value and the buy-and-hold line (at most 2,000 points
    each)."""
    model = read_model(request)
    require_run(model, run_id)
    return cached_json(
        model,
        ("v1-chart", run_id, range),
        lambda: Chart(run=run_id, range=range, lines=model.lines(run_id, window=RANGES[range])),
        shape=Chart,
    )


@v1_router.get("/runs/{run_id}/prices", response_model=list[Price], summary="Latest prices")
def prices(request: Request, run_id: RunPath) -> list[Price]:
    """Return each traded coin's latest price and where it came from."""
    model = read_model(request)
    require_run(model, run_id)
    return list(model.prices(run_id).values())


@v1_router.get(
    "/runs/{run_id}/prices/{coin}", response_model=PriceLine, summary="A coin's price line"
)
def price_line(
    request: Request,
    run_id: RunPath,
    coin: Annotated[str, Path(max_length=16, description="The coin, e.g. BTC.")],
    agent: AgentQuery = None,
) -> PriceLine:
    """Return the coin's price over the run, with the trades (one agent's, or all) on it."""
    model = read_model(request)
    require_run(model, run_id)
    require_agent(model, run_id, agent)
    coin = coin.upper()
    if coin not in model.coins(run_id):
        raise HTTPException(status_code=404, detail=f"run {run_id!r} does not trade {coin!r}")
    times, values = model.price_line(run_id, coin)
    return PriceLine(
        coin=coin,
        times_ms=times,
        prices=values,
        trades=[t for t in model.trades(run_id, agent=agent, limit=None) if t.coin == coin],
        positions=[p for p in model.positions(run_id, agent=agent) if p.coin == coin],
    )


@v1_router.get(
    "/runs/{run_id}/positions", response_model=list[PositionView], summary="Open positions"
)
def run_positions(
    request: Request, run_id: RunPath, agent: AgentQuery = None
) -> list[PositionView]:
    """Return the open positions with current price, unrealized PnL and exit plan."""
    model = read_model(request)
    require_run(model, run_id)
    require_agent(model, run_id, agent)
    return model.positions(run_id, agent=agent)


@v1_router.get("/runs/{run_id}/trades", response_model=list[TradeView], summary="Closed trades")
def run_trades(
    request: Request, run_id: RunPath, agent: AgentQuery = None, limit: LimitQuery = 100
) -> list[TradeView]:
    """Return the closed trades, newest first."""
    model = read_model(request)
    require_run(model, run_id)
    require_agent(model, run_id, agent)
    return model.trades(run_id, agent=agent, limit=limit)


@v1_router.get("/runs/{run_id}/cycles", response_model=list[CycleView], summary="Agent-cycles")
def run_cycles(
    request: Request, run_id: RunPath, agent: AgentQuery = None, limit: LimitQuery = 50
) -> list[CycleView]:
    """Return the latest agent-cycles, newest first."""
    model = read_model(request)
    require_run(model, run_id)
    require_agent(model, run_id, agent)
    return [CycleView(*row) for row in model.cycles(run_id, agent=agent, limit=limit)]


@v1_router.get("/runs/{run_id}/calls", response_model=list[CallCard], summary="Model calls")
def run_calls(
    request: Request,
    run_id: RunPath,
    agent: AgentQuery = None,
    limit: LimitQuery = 50,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="Only calls with a smaller id.")
    ] = None,
) -> list[CallCard]:
    """Return the latest model calls, answered and failed, newest first."""
    model = read_model(request)
    require_run(model, run_id)
    require_agent(model, run_id, agent)
    return model.calls(run_id, agent=agent, limit=limit, before_id=before)


@v1_router.get(
    "/runs/{run_id}/calls/{call_id}", response_model=CallDetail, summary="One call in full"
)
def run_call(
    request: Request,
    run_id: RunPath,
    call_id: Annotated[int, Path(ge=1, le=2**62, description="The call's id.")],
) -> CallDetail:
    """Return the call with its prompt, reasoning, raw answer and decisions."""
    model = read_model(request)
    require_run(model, run_id)
    detail = model.call_detail(run_id, call_id)
    if detail is None:
        raise HTTPException(status_code=404, detail=f"no call {call_id} in run {run_id!r}")
    return detail


@v1_router.get(
    "/runs/{run_id}/calls/{call_id}/images/{number}.png",
    response_class=Response,
    summary="A chart image a vision agent's call sent",
    responses={200: {"content": {"image/png": {}}}},
)
def run_call_image(
    request: Request,
    run_id: RunPath,
    call_id: Annotated[int, Path(ge=1, le=2**62, description="The call's id.")],
    number: Annotated[int, Path(ge=1, le=64, description="The image's place, from 1.")],
) -> Response:
    """Return the PNG exactly as the model was sent it."""
    model = read_model(request)
    require_run(model, run_id)
    png = model.call_image(run_id, call_id, number)
    if png is None:
        raise HTTPException(
            status_code=404, detail=f"no image {number} of call {call_id} in run {run_id!r}"
        )
    # An image of a recorded call never changes.
    return Response(
        content=png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"}
    )


@v1_router.get(
    "/runs/{run_id}/decisions", response_model=list[DecisionItem], summary="Latest decisions"
)
def run_decisions(
    request: Request, run_id: RunPath, agent: AgentQuery = None, limit: LimitQuery = 50
) -> list[DecisionItem]:
    """Return the decisions of the latest calls, with what became of each."""
    model = read_model(request)
    require_run(model, run_id)
    require_agent(model, run_id, agent)
    return [
        DecisionItem(
            call_id=card.call_id,
            agent=card.agent,
            created_at=card.created_at,
            coin=d.coin,
            signal=d.signal,
            outcome=d.outcome,
            reason=d.reason,
            fill_price=d.fill_price,
        )
        for card in model.calls(run_id, agent=agent, limit=limit)
        for d in card.decisions
    ]
