"""Read `--data` files and folders into candles, funding and marks per coin."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from app.candle_checks import DEFAULT_MAX_MOVE_PCT, check_candles
from app.errors import ConfigError
from app.market.files import (
    DataFileInfo,
    describe_data_file,
    infer_timeframe,
    is_data_file,
    load_candles,
    load_funding,
    load_mark_candles,
)
from app.market.resample import step_ns

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DataSet:
    """Candles of one base timeframe per coin, with funding settlements and marks where given."""

    candles: dict[str, pd.DataFrame]
    timeframe: str
    funding: dict[str, pd.Series] = field(default_factory=dict)
    marks: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: tuple[DataFileInfo, ...] = ()
    # What `drop_implausible` left out, one line per coin (shown with the backtest's results).
    notes: tuple[str, ...] = ()
    dropped_candles: int = 0

    @property
    def coins(self) -> tuple[str, ...]:
        """Return the coins, in the order their files were given."""
        return tuple(self.candles)


def expand_paths(paths: Sequence[Path | str]) -> list[Path]:
    """Return the data files named by `paths`: files as given, folders' data files by name."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_data_file(p))
            if not found:
                raise ConfigError(f"{path}: the folder holds no candle, funding or mark files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder")
    return files


def _name_coins(infos: list[DataFileInfo], coins: Sequence[str] | None) -> list[DataFileInfo]:
    unnamed = [info for info in infos if info.kind == "candles" and info.coin is None]
    if not unnamed:
        return infos
    if coins is None or len(coins) != len(unnamed):
        names = ", ".join(info.path.name for info in unnamed)
        raise ConfigError(
            f"the names of {names} do not say which coin they hold; name them like "
            "BTC_USDT-5m.csv.gz or pass --symbols with one coin per such file, in order"
        )
    named = dict(zip((id(info) for info in unnamed), coins, strict=True))
    return [
        DataFileInfo(info.path, named[id(info)].upper(), None, info.timeframe, info.kind)
        if id(info) in named
        else info
        for info in infos
    ]


def _merge(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if len(frames) == 1:
        return frames[0]
    merged = pd.concat(frames).sort_index(kind="stable")
    return merged[~merged.index.duplicated(keep="last")]


def _load_candle_files(infos: list[DataFileInfo]) -> tuple[dict[str, pd.DataFrame], str]:
    by_coin: dict[str, dict[str, list[pd.DataFrame]]] = defaultdict(lambda: defaultdict(list))
    for info in infos:
        frame = load_candles(info.path, timeframe=info.timeframe)
        timeframe = info.timeframe or infer_timeframe(frame)
        if timeframe is None:
            raise ConfigError(f"{info.path}: too few candles to tell their timeframe")
        assert info.coin is not None
        by_coin[info.coin][timeframe].append(frame)
    candles: dict[str, pd.DataFrame] = {}
    chosen: dict[str, str] = {}
    for coin, by_timeframe in by_coin.items():
        # The finest timeframe is the base; coarser files of the same coin are redundant.
        finest = min(by_timeframe, key=step_ns)
        skipped = sorted(set(by_timeframe) - {finest}, key=step_ns)
        if skipped:
            log.debug(
                "%s: using the %s candles; %s files not needed", coin, finest, ", ".join(skipped)
            )
        candles[coin] = _merge(by_timeframe[finest])
        chosen[coin] = finest
    timeframes = set(chosen.values())
    if len(timeframes) > 1:
        listing = ", ".join(f"{coin} {tf}" for coin, tf in chosen.items())
        raise ConfigError(
            f"the coins' candles have different timeframes ({listing}); give one timeframe for all"
        )
    return candles, timeframes.pop()


def drop_implausible(data: DataSet, *, max_move_pct: float = DEFAULT_MAX_MOVE_PCT) -> DataSet:
    """Return `data` without its implausible candles (app.candle_checks), saying what went.

    A dropped candle is a gap, like one missing from the file: it reaches no prompt, and no stop,
    target or liquidation is triggered by it (docs/simulation.md).
    """
    candles = dict(data.candles)
    notes = list(data.notes)
    dropped = data.dropped_candles
    for coin, frame in data.candles.items():
        checked = check_candles(frame, max_move_pct=max_move_pct)
        if checked.flagged:
            candles[coin] = checked.kept
            dropped += len(checked.flagged)
            notes.append(checked.summary(f"{coin} {data.timeframe}"))
            log.warning("%s", notes[-1])
    if dropped == data.dropped_candles:
        return data
    return replace(data, candles=candles, notes=tuple(notes), dropped_candles=dropped)


def load_data_set(
    paths: Sequence[Path | str],
    *,
    coins: Sequence[str] | None = None,
    max_move_pct: float = DEFAULT_MAX_MOVE_PCT,
) -> DataSet:
    """Load candle, funding (`*funding*`) and mark (`*mark*`) files and folders into a `DataSet`.

    The coin comes from each file name. Where a candle file's name does not say, `coins` names
    those files in order; otherwise `coins` selects which coins to keep (all by default). For each
    coin the finest candle timeframe is the base; files of one coin and timeframe are merged.
    Implausible candles (beyond `max_move_pct` of their neighbours) are dropped and counted.
    """
    infos = [describe_data_file(path) for path in expand_paths(paths)]
    for info in infos:
        if info.kind == "trades":
            log.info("%s: trade files are not used; skipped", info.path)
    infos = [info for info in infos if info.kind != "trades"]
    infos = _name_coins(infos, coins)
    wanted = {coin.upper() for coin in coins} if coins else None
    if wanted is not None:
        infos = [info for info in infos if info.coin is None or info.coin in wanted]
    candle_infos = [info for info in infos if info.kind == "candles"]
    if not candle_infos:
        raise ConfigError("no candle files among the data given (funding and mark files alone)")
    candles, timeframe = _load_candle_files(candle_infos)
    if wanted is not None:
        absent = sorted(wanted - set(candles))
        if absent:
            raise ConfigError(f"no candle file for {', '.join(absent)} in the data given")
    funding: dict[str, list[pd.Series]] = defaultdict(list)
    marks: dict[str, dict[str, list[pd.DataFrame]]] = defaultdict(lambda: defaultdict(list))
    for info in infos:
        if info.coin is None or info.coin not in candles:
            if info.kind != "candles":
                log.info("%s: no candles of that coin; file skipped", info.path)
            continue
        if info.kind == "funding":
            funding[info.coin].append(load_funding(info.path))
        elif info.kind == "mark":
            frame = load_mark_candles(info.path, timeframe=info.timeframe)
            marks[info.coin][info.timeframe or infer_timeframe(frame) or timeframe].append(frame)
    merged_funding = {
        coin: series[0] if len(series) == 1 else _merge_series(series)
        for coin, series in funding.items()
    }
    merged_marks = {coin: _merge(by_tf[min(by_tf, key=step_ns)]) for coin, by_tf in marks.items()}
    loaded = DataSet(
        candles=candles,
        timeframe=timeframe,
        funding=merged_funding,
        marks=merged_marks,
        files=tuple(infos),
    )
    return drop_implausible(loaded, max_move_pct=max_move_pct)


def _merge_series(series: list[pd.Series]) -> pd.Series:
    merged: pd.Series = pd.concat(series).sort_index(kind="stable")
    kept: pd.Series = merged[~merged.index.duplicated(keep="last")]
    return kept
