"""Every table shows its key figures whole at 80, 100 and 200 columns; `--wide` shows all.

A rich table squeezed into a terminal cuts its cells (`9,…`); these tables leave out secondary
columns instead, and say which. Rendered with rich consoles of fixed width, as a terminal would.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from app.cli.views import (
    leaderboard_json,
    leaderboard_table,
    positions_table,
    quota_table,
    trades_table,
)
from app.domain import ClosedTrade, ExitPlan, Position
from app.quota_report import ModelQuota
from app.reports import LeaderboardRow

WIDTHS = (80, 100, 200)
T0 = datetime(2025, 10, 20, 12, 0, tzinfo=UTC)


def render(table: object, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def row(name: str, model: str, equity: float, **changes: object) -> LeaderboardRow:
    fields: dict[str, object] = {
        "name": name,
        "provider": "modelscope",
        "model": model,
        "final_equity": equity,
        "return_pct": (equity / 10_000 - 1) * 100,
        "sharpe": -1.01,
        "sortino": None,
        "max_drawdown_pct": 15.11,
        "trades": 34,
        "win_rate": 0.353,
        "fees_paid": 77.58,
        "funding_paid": 4.44,
        "llm_calls": 4897,
        "cache_hits": 120,
        "parse_failures": 3,
        "rejected_decisions": 7,
        "failed_cycles": 2,
        "open_positions": 1,
        "prompt_tokens": 12_345_678,
        "completion_tokens": 234_567,
        "last_at": T0,
    }
    fields.update(changes)
    return LeaderboardRow(**fields)  # type: ignore[arg-type]


ROWS = [
    row("qwen", "Qwen/Qwen3-235B-A22B-Instruct-2507", 19_640.88),
    row(
        "deepseek_reasoner",
        "deepseek-reasoner",
        9_361.18,
        sharpe=None,
        sharpe_note="needs 7 days of returns, has 6 hours",
    ),
    row("late", "Qwen/Qwen3-32B", 10_000.0, return_pct=0.0, sharpe=None, last_at=None),
]
LEADERBOARD_KEYS = ["qwen", "19,640.88", "+96.41%", "-1.01", "9,361.18", "-6.39%", "34"]


@pytest.mark.parametrize("width", WIDTHS)
def test_the_leaderboard_shows_its_key_figures_whole(width: int) -> None:
    text = render(leaderboard_table(ROWS, title="Leaderboard (live)", hodl_pct=-6.31), width)

    assert "…" not in text
    for figure in [*LEADERBOARD_KEYS, "no cycle yet", "deepseek_reasoner", "-6.31%"]:
        assert figure in text, figure
    assert all(len(line) <= width for line in text.splitlines())
    assert "Sharpe –: needs 7 days of returns, has 6 hours" in text


def test_the_leaderboard_leaves_out_secondary_columns_by_width_and_says_so() -> None:
    narrow = render(leaderboard_table(ROWS, title="t", hodl_pct=None), 80)
    broad = render(leaderboard_table(ROWS, title="t", hodl_pct=None), 200)

    assert "max DD" not in narrow.splitlines()[2] and "max DD" in broad
    assert "not shown for lack of width: model, max DD" in narrow
    assert "fees" in broad and "LLM calls" in broad and "cache hits" in broad


@pytest.mark.parametrize("width", WIDTHS)
def test_wide_shows_every_column(width: int) -> None:
    text = render(leaderboard_table(ROWS, title="t", hodl_pct=None, wide=True), max(width, 260))

    for header in ("model", "max DD", "win rate", "funding", "tokens in/out", "rejected"):
        assert header in text
    assert "12,345,678/234,567" in text and "not shown" not in text


def test_a_synthetic_run_labels_every_agent_row() -> None:
    text = render(leaderboard_table(ROWS, title="t", hodl_pct=None, synthetic=True), 80)

    # A long name wraps its label onto the row's second line; each row has it.
    assert text.count("(SYNTHETIC)") == 3 and "…" not in text


def test_the_leaderboard_json_is_unchanged_by_width() -> None:
    payload = leaderboard_json("live", ROWS)

    assert payload["run"] == payload["run_id"] == "live" and payload["synthetic"] is False
    assert [agent["name"] for agent in payload["agents"]] == ["qwen", "deepseek_reasoner", "late"]
    assert payload["agents"][0]["prompt_tokens"] == 12_345_678


POSITIONS = [
    (
        "deepseek_reasoner",
        Position(
            coin="DOGE",
            side="long",
            quantity=5_361_630.0,
            entry_price=0.18654,
            leverage=10,
            margin_usd=100_016.47,
            liquidation_price=0.16882,
            opened_at=T0,
            exit_plan=ExitPlan(profit_target=5_361_630.0, stop_loss=0.1701),
        ),
    ),
    (
        "qwen",
        Position(
            coin="BTC",
            side="short",
            quantity=0.0123,
            entry_price=110_234.5,
            leverage=20,
            margin_usd=67.79,
            liquidation_price=115_194.0,
            opened_at=T0,
            exit_plan=ExitPlan(profit_target=104_000.0, stop_loss=113_000.0),
        ),
    ),
]
PRICES = {"DOGE": 0.19012, "BTC": 109_000.0}


@pytest.mark.parametrize("width", WIDTHS)
def test_positions_show_price_and_unrealized_pnl_whole_without_exponents(width: int) -> None:
    """DOGE long 5,361,630 from 0.18654 to 0.19012: +0.00358 x 5,361,630 = +19,194.6354.
    BTC short 0.0123 from 110,234.5 to 109,000: +1,234.5 x 0.0123 = +15.18435."""
    text = render(positions_table("live", POSITIONS, prices=PRICES), width)

    assert "…" not in text and "e+" not in text
    for figure in ("5,361,630", "0.0123", "0.186540", "0.190120", "+19,194.64", "110,234.50"):
        assert figure in text, figure
    assert "+15.18" in text
    if width >= 120:
        assert "5,361,630.00" in text  # the target, no longer 5.36163e+06


@pytest.mark.parametrize("width", WIDTHS)
def test_trades_show_their_key_figures_whole(width: int) -> None:
    trade = ClosedTrade(
        coin="ETH",
        side="long",
        quantity=1.5,
        leverage=5,
        entry_price=3_900.12,
        exit_price=4_012.5,
        opened_at=T0,
        closed_at=T0 + timedelta(hours=7, minutes=30),
        entry_fee_usd=2.63,
        exit_fee_usd=2.71,
        funding_usd=-0.42,
        gross_pnl_usd=168.57,
        net_pnl_usd=163.65,
        exit_reason="take_profit",
    )

    text = render(trades_table("live", [("deepseek_reasoner", trade)]), width)

    assert "…" not in text
    for figure in ("deepseek_reasoner", "ETH", "long", "+163.65", "2025-10-20 19:30"):
        assert figure in text, figure


def quota(model: str, **changes: object) -> ModelQuota:
    fields: dict[str, object] = {
        "provider": "modelscope",
        "model": model,
        "agents": ("qwen",),
        "primary_for": 1,
        "calls_today": 312,
        "successes_today": 300,
        "failures_today": 12,
        "rate_limited_today": 1,
        "requests_limit": 2000,
        "requests_remaining": 1688,
        "model_requests_limit": 500,
        "model_requests_remaining": 188,
        "limits_seen_on": "2025-10-20",
        "calls_left": 188,
        "calls_left_estimated": False,
        "cycles_left_today": 240,
        "calls_needed_today": 240,
        "enough_for_today": False,
        "runs_out_at": "21:24 UTC",
        "exhausted": False,
        "last_status": "ok",
        "last_error": None,
    }
    fields.update(changes)
    return ModelQuota(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("width", WIDTHS)
def test_the_quota_table_shows_calls_and_verdict_whole_and_explains_needed(width: int) -> None:
    report = [quota("Qwen/Qwen3-235B-A22B-Instruct-2507"), quota("Qwen/Qwen3-32B")]

    text = render(quota_table("3m", report), width)

    assert "…" not in text
    assert "312 (12 failed)" in text and "runs out ~21:24 UTC" in text
    assert "modelscope:Qwen/Qwen3-32B" in text
    if width >= 200:
        assert "modelscope:Qwen/Qwen3-235B-A22B-Instruct-2507" in text
        assert "needed today" in text.splitlines()[2]  # the column header
    assert "needed today: the calls this model takes until 00:00 UTC" in " ".join(text.split())
