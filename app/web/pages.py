"""The dashboard's pages: server-rendered HTML (Jinja2), with one small script for the charts."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from app.web.api import AgentQuery, RunQuery, default_run, read_model, require_agent, require_run
from app.web.readmodel import ReadModel, RunInfo

TEMPLATES: Final = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)


def money(value: float | None) -> str:
    """Format USD with thousands separators and cents ("–" when unknown)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.2f}"


def signed_money(value: float | None) -> str:
    """Format a USD change with its sign."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+,.2f}"


def pct(value: float | None) -> str:
    """Format a percentage (given in percent) with its sign."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.2f}%"


def ratio(value: float | None) -> str:
    """Format a ratio with two decimals."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}"


def price(value: float | None) -> str:
    """Format a price by significant digits (DOGE and BTC alike)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.6g}" if abs(value) < 1000 else f"{value:,.2f}"


def duration(seconds: float | None) -> str:
    """Format a holding time as nof1 does: 5H 45M."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    minutes = int(seconds // 60)
    return f"{minutes // 60}H {minutes % 60}M"


def when(moment: datetime | None) -> str:
    """Format a UTC time."""
    return "–" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


for _name, _filter in {
    "money": money,
    "signed_money": signed_money,
    "pct": pct,
    "ratio": ratio,
    "price": price,
    "duration": duration,
    "when": when,
}.items():
    TEMPLATES.env.filters[_name] = _filter


def wants_html(request: Request) -> bool:
    """Return True for a browser asking for a page (not the API)."""
    return not request.url.path.startswith("/api") and "text/html" in request.headers.get(
        "accept", ""
    )


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """Render a page."""
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)


def error_page(request: Request, status_code: int, message: str) -> Response:
    """Render an error as a page (for browsers)."""
    return render(request, "error.html", status_code=status_code, message=message, run=None)


def login_page(request: Request, *, failed: bool, status_code: int = 200) -> Response:
    """Render the token form."""
    return render(request, "login.html", status_code=status_code, failed=failed, run=None)


def _context(
    request: Request, run: str | None, active: str
) -> tuple[ReadModel, RunInfo, dict[str, Any]]:
    model = read_model(request)
    run_id = run or default_run(request)
    info = require_run(model, run_id)
    context = {
        "run": info,
        "runs": model.runs(),
        "prices": list(model.prices(run_id).values()),
        "agents": model.agents(run_id),
        "active": active,
        "query": f"run={info.run_id}",
    }
    return model, info, context


@router.get("/", response_class=HTMLResponse)
def live_page(request: Request, run: RunQuery | None = None) -> Response:
    """The live page: account values, the leaderboard's head and the prices (rendered once per
    data version: it is the page everyone keeps open)."""
    model = read_model(request)
    run_id = run or default_run(request)
    require_run(model, run_id)

    def page() -> bytes:
        _, info, context = _context(request, run_id, "live")
        board = model.leaderboard(info.run_id)
        rendered = render(request, "live.html", board=board, **context)
        return bytes(rendered.body)

    return HTMLResponse(model.cached(("page", "live", run_id), page))


@router.get("/leaderboard", response_class=HTMLResponse)
def leaderboard_page(request: Request, run: RunQuery | None = None) -> Response:
    """The leaderboard and its advanced view."""
    model, info, context = _context(request, run, "leaderboard")
    return render(request, "leaderboard.html", board=model.leaderboard(info.run_id), **context)


@router.get("/chat", response_class=HTMLResponse)
def chat_page(
    request: Request,
    run: RunQuery | None = None,
    agent: AgentQuery = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 30,
) -> Response:
    """Model chat: one card per call, expandable to the prompt, reasoning and decisions."""
    model, info, context = _context(request, run, "chat")
    require_agent(model, info.run_id, agent)
    cards = model.calls(info.run_id, agent=agent, limit=limit)
    return render(request, "chat.html", cards=cards, agent=agent, **context)


@router.get("/positions", response_class=HTMLResponse)
def positions_page(
    request: Request, run: RunQuery | None = None, agent: AgentQuery = None
) -> Response:
    """Open positions with their exit plans."""
    model, info, context = _context(request, run, "positions")
    require_agent(model, info.run_id, agent)
    positions = model.positions(info.run_id, agent=agent)
    return render(request, "positions.html", positions=positions, agent=agent, **context)


@router.get("/trades", response_class=HTMLResponse)
def trades_page(
    request: Request,
    run: RunQuery | None = None,
    agent: AgentQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Completed trades."""
    model, info, context = _context(request, run, "trades")
    require_agent(model, info.run_id, agent)
    trades = model.trades(info.run_id, agent=agent, limit=limit)
    return render(request, "trades.html", trades=trades, agent=agent, **context)


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, run: RunQuery | None = None) -> Response:
    """Every run: the live one and each backtest."""
    model = read_model(request)
    runs = model.runs()
    chosen = model.run(run or default_run(request)) or (runs[0] if runs else None)
    if chosen is None:
        return render(request, "empty.html", run=None, runs=[], active="runs")
    _, _, context = _context(request, chosen.run_id, "runs")
    return render(request, "runs.html", **context)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: Annotated[str, PathParam(max_length=64)]) -> Response:
    """One run's summary and chart."""
    model, info, context = _context(request, run_id, "runs")
    board = model.leaderboard(run_id)
    lines = model.lines(run_id)
    hodl = next((line for line in lines if line.key == "buy_and_hold"), None)
    hodl_pct = (
        None
        if hodl is None or not hodl.values
        else (hodl.values[-1] / hodl.starting_cash_usd - 1.0) * 100.0
    )
    span = None if info.first_at is None or info.last_at is None else info.last_at - info.first_at
    return render(
        request, "run.html", board=board, hodl_pct=hodl_pct, span=span or timedelta(0), **context
    )


@router.get("/agents/{name}", response_class=HTMLResponse)
def agent_page(
    request: Request,
    name: Annotated[str, PathParam(max_length=64)],
    run: RunQuery | None = None,
    coin: Annotated[str | None, Query(max_length=16)] = None,
) -> Response:
    """One agent: its account curve, its trades on a coin's price chart, its calls."""
    model, info, context = _context(request, run, "agents")
    agent = require_agent(model, info.run_id, name)
    assert agent is not None
    coins = model.coins(info.run_id)
    chosen = (coin or (coins[0] if coins else "")).upper()
    if coins and chosen not in coins:
        raise HTTPException(
            status_code=404, detail=f"run {info.run_id!r} does not trade {chosen!r}"
        )
    row = next((r for r in model.leaderboard(info.run_id) if r.base.name == name), None)
    return render(
        request,
        "agent.html",
        agent=agent,
        row=row,
        coins=coins,
        coin=chosen,
        positions=model.positions(info.run_id, agent=name),
        trades=model.trades(info.run_id, agent=name, limit=50),
        cards=model.calls(info.run_id, agent=name, limit=10),
        **context,
    )
