"""Planning the charts: which candles, which levels, which images, and the key that names them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from app.charts.spec import (
    CHART_VERSION,
    MAX_CANDLES,
    ChartLimits,
    ChartSpec,
    Panel,
    PositionMarks,
    design_size,
    fit_size,
    panel_from_frame,
    plan_market_charts,
)
from app.domain import CoinSnapshot, ExitPlan, MarketSnapshot, Position

AT = datetime(2025, 10, 28, 7, 3, tzinfo=UTC)


def frame(rows: int, *, step: timedelta, last_open: datetime, base: float = 100.0) -> pd.DataFrame:
    index = pd.date_range(end=last_open, periods=rows, freq=step, tz=UTC, name="open_time")
    close = base + np.arange(rows, dtype=float)
    return pd.DataFrame(
        {
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(rows, 10.0),
            "ema20": close - 2.0,
            "ema50": close - 3.0,
        },
        index=index,
    )


def snapshot(coins: tuple[str, ...] = ("BTC", "ETH")) -> MarketSnapshot:
    return MarketSnapshot(
        at=AT,
        intraday_timeframe="3m",
        context_timeframe="4h",
        coins={
            coin: CoinSnapshot(
                coin=coin,
                symbol=f"{coin}/USDT:USDT",
                last_price=100.0 + i,
                intraday=frame(70, step=timedelta(minutes=3), last_open=AT - timedelta(minutes=3)),
                context=frame(
                    70, step=timedelta(hours=4), last_open=datetime(2025, 10, 28, tzinfo=UTC)
                ),
            )
            for i, coin in enumerate(coins)
        },
    )


def position(coin: str, *, stop: float | None = 95.0, target: float | None = 120.0) -> Position:
    return Position(
        coin=coin,
        side="long",
        quantity=1.0,
        entry_price=100.0,
        leverage=5,
        margin_usd=20.0,
        liquidation_price=81.0,
        opened_at=AT,
        exit_plan=ExitPlan(profit_target=target, stop_loss=stop),
    )


def test_a_panel_keeps_only_candles_closed_by_the_snapshot_time() -> None:
    # The last row opens at 07:03 and closes at 07:06: after AT = 07:03, so it is dropped even
    # though the caller passed it.
    forming = frame(70, step=timedelta(minutes=3), last_open=AT)
    panel = panel_from_frame("BTC", forming, timeframe="3m", at=AT)
    assert len(panel) == MAX_CANDLES
    last_open = pd.Timestamp(int(panel.open_ns[-1]), tz=UTC)
    assert last_open == AT - timedelta(minutes=3)
    assert panel.column("close")[-1] == forming["close"].iloc[-2]


def test_a_candle_closing_exactly_at_t_is_shown() -> None:
    context = frame(3, step=timedelta(hours=4), last_open=datetime(2025, 10, 28, 4, tzinfo=UTC))
    at_boundary = datetime(2025, 10, 28, 8, tzinfo=UTC)
    assert len(panel_from_frame("BTC", context, timeframe="4h", at=at_boundary)) == 3
    assert (
        len(panel_from_frame("BTC", context, timeframe="4h", at=at_boundary - timedelta(seconds=1)))
        == 2
    )


def test_a_missing_ema_column_is_nan_and_other_columns_are_kept() -> None:
    data = frame(10, step=timedelta(minutes=3), last_open=AT - timedelta(minutes=3)).drop(
        columns=["ema50"]
    )
    panel = panel_from_frame("BTC", data, timeframe="3m", at=AT)
    assert np.isnan(panel.column("ema50")).all()
    np.testing.assert_array_equal(panel.column("ema20"), data["ema20"].to_numpy())


def test_the_same_frame_object_is_converted_once_but_a_changed_copy_is_read_again() -> None:
    data = frame(10, step=timedelta(minutes=3), last_open=AT - timedelta(minutes=3))
    first = panel_from_frame("BTC", data, timeframe="3m", at=AT)
    again = panel_from_frame("BTC", data, timeframe="3m", at=AT)
    assert again.values.base is first.values.base  # the cached arrays
    changed = data.copy()
    changed["close"] += 1.0
    assert panel_from_frame("BTC", changed, timeframe="3m", at=AT).column("close")[0] == (
        first.column("close")[0] + 1.0
    )


def spec_with(**changes: object) -> ChartSpec:
    values = np.arange(14, dtype=float).reshape(2, 7)
    panel = Panel(coin="BTC", timeframe="3m", open_ns=np.array([0, 180_000_000_000]), values=values)
    fields: dict[str, object] = {
        "kind": "intraday",
        "panels": (panel,),
        "rows": 1,
        "columns": 1,
        "width_px": 448,
        "height_px": 320,
    }
    fields.update(changes)
    return ChartSpec(**fields)  # type: ignore[arg-type]


def test_the_key_names_everything_drawn_and_nothing_else() -> None:
    base = spec_with()
    assert base.key == spec_with().key
    assert len(base.key) == 64
    panel = base.panels[0]
    nudged = panel.values.copy()
    nudged[1, 3] += 1e-9
    variants = [
        spec_with(width_px=480),
        spec_with(kind="context"),
        spec_with(version=CHART_VERSION + "x"),
        spec_with(panels=(dataclasses.replace(panel, values=nudged),)),
        spec_with(panels=(dataclasses.replace(panel, coin="ETH"),)),
        spec_with(panels=(dataclasses.replace(panel, marks=PositionMarks("long", 5.0, 4.0)),)),
        spec_with(panels=(dataclasses.replace(panel, marks=PositionMarks("short", 5.0, 4.0)),)),
    ]
    keys = {variant.key for variant in variants}
    assert base.key not in keys and len(keys) == len(variants)


def test_nan_payloads_hash_alike() -> None:
    values = np.arange(14, dtype=float).reshape(2, 7)
    odd_nan = values.copy()
    odd_nan.view(np.uint64)[0, 6] = 0x7FF8_0000_0000_0001  # a NaN with another payload
    plain_nan = values.copy()
    plain_nan[0, 6] = np.nan
    panel = spec_with().panels[0]
    one = spec_with(panels=(dataclasses.replace(panel, values=odd_nan),))
    two = spec_with(panels=(dataclasses.replace(panel, values=plain_nan),))
    assert one.key == two.key


def test_plan_puts_positions_on_the_intraday_image_only() -> None:
    specs = plan_market_charts(snapshot(), {"ETH": position("ETH")})
    assert [spec.kind for spec in specs] == ["intraday", "context"]
    intraday, context = specs
    assert [p.marks is not None for p in intraday.panels] == [False, True]
    assert intraday.panels[1].marks == PositionMarks("long", 100.0, 95.0, 120.0)
    assert not context.has_positions
    # The context image is the same for an agent without positions: shared and stored once.
    assert plan_market_charts(snapshot())[1].key == context.key
    assert plan_market_charts(snapshot())[0].key != intraday.key


def test_more_than_six_coins_make_more_images_and_max_images_keeps_the_first() -> None:
    coins = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "HYPE")
    specs = plan_market_charts(snapshot(coins))
    assert [(s.kind, len(s.panels)) for s in specs] == [
        ("intraday", 6),
        ("intraday", 1),
        ("context", 6),
        ("context", 1),
    ]
    limited = plan_market_charts(snapshot(coins), limits=ChartLimits(max_images=2))
    assert [(s.kind, len(s.panels)) for s in limited] == [("intraday", 6), ("intraday", 1)]
    chosen = plan_market_charts(snapshot(coins), coins=["DOGE", "BTC", "NOPE"])
    assert chosen[0].coins == ("DOGE", "BTC")


def test_sizes_fit_the_limits_in_multiples_of_32() -> None:
    assert design_size(6) == (896, 800)
    assert design_size(2) == (896, 320)
    assert design_size(1) == (448, 320)
    assert fit_size(896, 800, ChartLimits()) == (896, 800)
    assert fit_size(896, 800, ChartLimits(max_width_px=640)) == (640, 544)
    assert fit_size(896, 800, ChartLimits(max_height_px=400)) == (448, 384)
    width, height = fit_size(896, 800, ChartLimits(max_width_px=256, max_height_px=256))
    assert (width, height) == (256, 256)
    specs = plan_market_charts(snapshot(), limits=ChartLimits(max_width_px=600))
    assert all(s.width_px <= 600 and s.width_px % 32 == 0 for s in specs)


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 256"):
        ChartLimits(max_width_px=100)
    with pytest.raises(ValueError, match="max_images"):
        ChartLimits(max_images=0)


def test_position_marks_skip_missing_and_unusable_levels() -> None:
    marks = PositionMarks.from_position(position("BTC", stop=None, target=float("nan")))
    assert marks.levels() == (("entry", 100.0),)
    assert PositionMarks.from_position(position("BTC")).levels() == (
        ("entry", 100.0),
        ("stop", 95.0),
        ("target", 120.0),
    )


def test_caption_names_coins_timeframes_and_the_utc_range() -> None:
    intraday, context = plan_market_charts(snapshot(), {"BTC": position("BTC")})
    assert intraday.caption == (
        "BTC, ETH: 3m candles (last 60 closed, 2025-10-28 04:03-07:03 UTC), "
        "with EMA20, EMA50 and volume; open positions marked"
    )
    assert context.caption == (
        "BTC, ETH: 4h candles (last 60 closed, 2025-10-18 04:00 to 2025-10-28 04:00 UTC), "
        "with EMA20, EMA50 and volume"
    )
