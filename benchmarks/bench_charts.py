"""Charts for vision agents: render time, bytes and tokens per request, storage, by layout.

    .venv/bin/python benchmarks/bench_charts.py [--cycles 96] [--write DIR] [--example PNG]

Walks consecutive 5-minute cycles of the six coins in ../shared/data/market (generated candles
when it is absent) with one agent holding two open positions, and for each layout and size
prints:
- render time per cycle: `cold` draws every image of the cycle, `steady` is what a cycle costs
  after the previous one (the renderer keeps the images of unchanged specs, e.g. the 4h chart);
  CPU time of this process and wall time, medians over the cycles;
- bytes per request (PNG and the base64 sent), estimated image tokens per request (Qwen3-VL,
  32-pixel squares; Qwen2.5-VL, 28);
- new image bytes stored per cycle (an image is stored once by its sha256) and per vision agent
  day at a 3-minute cadence (480 cycles, a 4h chart changing every 80 cycles), and what
  `compact_png` makes of an intraday image;
- planning (the specs and their keys, what a replay computes instead of drawing) per cycle.

`grid` is the chosen layout (one image per timeframe, six coins each; 896 x 800 is its own size,
the others are the same drawing at another size); `per-coin` is one image per coin with its
intraday and 4h panels. `--write DIR` saves the first cycle's images of every layout;
`--example PNG` saves the chosen layout's intraday chart of the first cycle (docs/images/).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.charts.png import compact_png  # noqa: E402
from app.charts.render import ChartRenderer  # noqa: E402
from app.charts.spec import (  # noqa: E402
    ChartSpec,
    PositionMarks,
    panel_from_frame,
    plan_market_charts,
)
from app.charts.tokens import QWEN2_5_VL, QWEN3_VL, estimate_image_tokens  # noqa: E402
from app.domain import ExitPlan, MarketSnapshot, Position  # noqa: E402
from app.market.dataset import load_data_set  # noqa: E402
from app.market.historical import HistoricalMarketData  # noqa: E402

COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
DATA = ROOT.parent / "shared" / "data" / "market"
CYCLES_PER_DAY = 480  # a 3-minute cadence
CONTEXT_CHANGES_PER_DAY = 6  # one 4h candle closes every 80 cycles

Planner = Callable[[MarketSnapshot, Mapping[str, Position]], tuple[ChartSpec, ...]]


def market() -> tuple[HistoricalMarketData, str]:
    if (DATA / "BTC_USDT-5m.csv.gz").is_file():
        data = load_data_set([DATA], coins=list(COINS))
        candles = {coin: data.candles[coin] for coin in COINS}
        return (
            HistoricalMarketData(candles, intraday_timeframe="5m", context_timeframe="4h"),
            f"{DATA} (Binance 5m)",
        )
    sys.path.insert(0, str(ROOT))
    from tests.fakes.candles import six_coin_market

    return (
        HistoricalMarketData(
            six_coin_market(COINS, periods=6000), intraday_timeframe="5m", context_timeframe="4h"
        ),
        "generated candles (../shared/data/market is absent)",
    )


def positions_at(snapshot: MarketSnapshot) -> dict[str, Position]:
    """A long BTC and a short SOL, opened near the first cycle's prices."""
    result = {}
    for coin, side, stop, target in (("BTC", "long", 0.99, 1.015), ("SOL", "short", 1.01, 0.97)):
        price = snapshot.price(coin)
        result[coin] = Position(
            coin=coin,
            side=side,  # type: ignore[arg-type]
            quantity=1.0,
            entry_price=price,
            leverage=5,
            margin_usd=price / 5,
            liquidation_price=price * (0.8 if side == "long" else 1.2),
            opened_at=snapshot.at,
            exit_plan=ExitPlan(profit_target=price * target, stop_loss=price * stop),
        )
    return result


def grid_planner(size: tuple[int, int] | None = None) -> Planner:
    """The chosen layout, at its own size or redrawn at `size`."""

    def plan(snapshot: MarketSnapshot, positions: Mapping[str, Position]) -> tuple[ChartSpec, ...]:
        specs = plan_market_charts(snapshot, positions)
        if size is None:
            return specs
        return tuple(
            dataclasses.replace(spec, width_px=size[0], height_px=size[1]) for spec in specs
        )

    return plan


def per_coin_planner(width: int, height: int) -> Planner:
    """One image per coin: its intraday panel above its 4h panel."""

    def plan(snapshot: MarketSnapshot, positions: Mapping[str, Position]) -> tuple[ChartSpec, ...]:
        specs = []
        for coin, snap in snapshot.coins.items():
            position = positions.get(coin)
            marks = PositionMarks.from_position(position) if position else None
            panels = (
                panel_from_frame(
                    coin,
                    snap.intraday,
                    timeframe=snapshot.intraday_timeframe,
                    at=snapshot.at,
                    marks=marks,
                ),
                panel_from_frame(
                    coin, snap.context, timeframe=snapshot.context_timeframe, at=snapshot.at
                ),
            )
            specs.append(
                ChartSpec(
                    kind="coin", panels=panels, rows=2, columns=1, width_px=width, height_px=height
                )
            )
        return tuple(specs)

    return plan


def measure(
    name: str, planner: Planner, snapshots: Sequence[MarketSnapshot], write: Path | None
) -> dict[str, float | str]:
    positions = positions_at(snapshots[0])
    cold_cpu, cold_wall, steady_cpu, steady_wall, plan_cpu = [], [], [], [], []
    stored: dict[str, int] = {}
    new_by_kind: dict[str, int] = {}
    intraday_new: list[int] = []
    renderer = ChartRenderer()
    request_bytes = tokens3 = tokens25 = 0
    for index, snapshot in enumerate(snapshots):
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        specs = planner(snapshot, positions)
        plan_cpu.append(time.process_time() - t_cpu)
        images = renderer.render_all(specs)
        steady_cpu.append(time.process_time() - t_cpu)
        steady_wall.append(time.perf_counter() - t_wall)
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        ChartRenderer().render_all(specs)
        cold_cpu.append(time.process_time() - t_cpu)
        cold_wall.append(time.perf_counter() - t_wall)
        cycle_new = 0
        for image in images:
            if image.sha256 not in stored:
                stored[image.sha256] = image.size_bytes
                new_by_kind[image.kind] = new_by_kind.get(image.kind, 0) + 1
                if image.kind != "context":
                    cycle_new += image.size_bytes
        if index:
            intraday_new.append(cycle_new)
        if index == 0:
            request_bytes = sum(image.size_bytes for image in images)
            tokens3 = sum(estimate_image_tokens(i.width_px, i.height_px, QWEN3_VL) for i in images)
            tokens25 = sum(
                estimate_image_tokens(i.width_px, i.height_px, QWEN2_5_VL) for i in images
            )
            if write is not None:
                write.mkdir(parents=True, exist_ok=True)
                for image in images:
                    path = write / f"{name}-{image.kind}-{'-'.join(image.coins)}.png"
                    path.write_bytes(image.png)
            first = images
    context_sizes = [stored[i.sha256] for i in first if i.kind == "context"]
    per_day = statistics.mean(intraday_new) * CYCLES_PER_DAY + sum(context_sizes) * (
        CONTEXT_CHANGES_PER_DAY
    )
    sizes = " + ".join(f"{i.width_px}x{i.height_px}" for i in first[:2])
    if len(first) > 2:
        sizes = f"{len(first)} x {first[0].width_px}x{first[0].height_px}"
    return {
        "layout": name,
        "images": sizes,
        "cold_cpu_ms": statistics.median(cold_cpu) * 1000,
        "cold_wall_ms": statistics.median(cold_wall) * 1000,
        "steady_cpu_ms": statistics.median(steady_cpu) * 1000,
        "steady_wall_ms": statistics.median(steady_wall) * 1000,
        "plan_ms": statistics.median(plan_cpu) * 1000,
        "request_kb": request_bytes / 1000,
        "base64_kb": 4 * ((request_bytes + 2) // 3) / 1000,
        "tokens_qwen3": tokens3,
        "tokens_qwen25": tokens25,
        "new_kb_per_cycle": statistics.mean(intraday_new) / 1000,
        "mb_per_day": per_day / 1e6,
    }


def storage_codec(images: Sequence[bytes]) -> tuple[float, float, float]:
    """Return mean PNG bytes, mean `compact_png` bytes and its mean CPU time in seconds."""
    png_sizes, compact_sizes, times = [], [], []
    for png in images:
        started = time.process_time()
        blob = compact_png(png)
        times.append(time.process_time() - started)
        png_sizes.append(len(png))
        compact_sizes.append(len(blob))
    return statistics.mean(png_sizes), statistics.mean(compact_sizes), statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=96, help="consecutive 5m cycles")
    parser.add_argument("--write", type=Path, default=None, help="save the first images here")
    parser.add_argument("--example", type=Path, default=None, help="save the example chart here")
    args = parser.parse_args(argv)
    data, source = market()
    # Season 1 of Alpha Arena when the real data is there (it covers 2025), else a day in.
    season = datetime(2025, 10, 28, 7, 5, tzinfo=UTC)
    start = season if data.start_at < season < data.end_at else data.first_ready_at()
    snapshots = [data.snapshot_at(start + i * timedelta(minutes=5)) for i in range(args.cycles)]
    print(f"data: {source}; {args.cycles} cycles from {start:%Y-%m-%d %H:%M} UTC")
    layouts: list[tuple[str, Planner]] = [
        ("grid 1120", grid_planner((1120, 1024))),
        ("grid 896", grid_planner()),
        ("grid 672", grid_planner((672, 608))),
        ("per-coin 672", per_coin_planner(672, 640)),
        ("per-coin 512", per_coin_planner(512, 480)),
    ]
    header = (
        f"{'layout':<14}{'images':>22}{'cold cpu/wall ms':>18}{'steady cpu/wall':>17}"
        f"{'plan ms':>9}{'kB/req':>8}{'b64 kB':>8}{'tok Q3':>8}{'tok Q2.5':>9}"
        f"{'new kB/cyc':>11}{'MB/day':>8}"
    )
    print(header)
    for name, planner in layouts:
        row = measure(name, planner, snapshots, args.write)
        print(
            f"{row['layout']:<14}{row['images']:>22}"
            f"{row['cold_cpu_ms']:>9.1f}/{row['cold_wall_ms']:<8.1f}"
            f"{row['steady_cpu_ms']:>8.1f}/{row['steady_wall_ms']:<8.1f}"
            f"{row['plan_ms']:>9.2f}{row['request_kb']:>8.1f}{row['base64_kb']:>8.1f}"
            f"{row['tokens_qwen3']:>8}{row['tokens_qwen25']:>9}"
            f"{row['new_kb_per_cycle']:>11.1f}{row['mb_per_day']:>8.2f}"
        )
    if args.example is not None:
        example = ChartRenderer().render(
            plan_market_charts(snapshots[0], positions_at(snapshots[0]))[0]
        )
        args.example.parent.mkdir(parents=True, exist_ok=True)
        args.example.write_bytes(example.png)
        print(f"example: {args.example} ({example.size_bytes} bytes): {example.caption}")
    renderer = ChartRenderer()
    intraday = [
        renderer.render(plan_market_charts(s, positions_at(snapshots[0]))[0]).png
        for s in snapshots[:12]
    ]
    png_mean, compact_mean, compact_s = storage_codec(intraday)
    print(
        f"intraday grid image: PNG {png_mean / 1000:.1f} kB; compact_png (rows in LZMA, "
        f"expands to the same bytes) {compact_mean / 1000:.1f} kB in {compact_s * 1000:.0f} ms"
    )
    print(f"sha256 of the first intraday image: {hashlib.sha256(intraday[0]).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
