"""Historical market-data files: candles, funding rates and mark prices in the common layouts.

`load_candles(path)` reads csv (also .gz/.bz2/.xz/.zip), parquet, feather, freqtrade's json rows
(`[[ms, open, high, low, close, volume], ...]`, also .json.gz) and pandas "columns"-orient json,
and returns one clean frame: float columns `open, high, low, close, volume`, a UTC
`DatetimeIndex` of candle open times named `open_time`, sorted, duplicates dropped (the last row
wins). Gaps are reported in the log and by `find_gaps`, never filled. A file that cannot be used
raises `ConfigError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from app.domain import (
    CANDLE_COLUMNS,
    CANDLE_INDEX_NAME,
    index_ns,
    timeframe_to_timedelta,
)
from app.errors import ConfigError

log = logging.getLogger(__name__)

MARK_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close")
FUNDING_INDEX_NAME: Final = "settled_at"

DataKind = Literal["candles", "funding", "mark", "trades"]

# Longest suffixes first so `x.csv.gz` is not taken for `.gz`.
DATA_SUFFIXES: Final[tuple[str, ...]] = (
    ".csv.gz",
    ".csv.bz2",
    ".csv.xz",
    ".csv.zip",
    ".json.gz",
    ".feather",
    ".parquet",
    ".csv",
    ".json",
)
_TIME_COLUMNS: Final = (
    "open_time",
    "date",
    "datetime",
    "time",
    "timestamp",
    "timestamp_ms",
    "open_time_ms",
)
_FUNDING_COLUMNS: Final = ("funding_rate", "fundingrate", "rate")
_NAME_RE: Final = re.compile(
    r"^(?P<pair>[A-Za-z0-9]+(?:_[A-Za-z0-9]+){0,2})"
    r"(?:-(?P<tf>\d+[smhdwM]))?"
    r"(?:-(?P<kind>futures|spot|mark|index|premiumIndex|funding_rate|funding|trades))?$"
)


@dataclass(frozen=True, slots=True)
class DataFileInfo:
    """What a data file's name says: coin (None if it does not say), timeframe and kind."""

    path: Path
    coin: str | None
    quote: str | None
    timeframe: str | None
    kind: DataKind


def _split_suffix(name: str) -> tuple[str, str] | None:
    lower = name.lower()
    for suffix in DATA_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def is_data_file(path: Path) -> bool:
    """Return True when `path` has one of the suffixes the loaders read."""
    return _split_suffix(path.name) is not None


def describe_data_file(path: Path | str) -> DataFileInfo:
    """Infer (coin, timeframe, kind) from a file name such as `BTC_USDT_USDT-5m-futures.feather`.

    Recognised: `BTC_USDT-5m.csv.gz`, `BTC-5m.csv`, freqtrade's
    `<BASE>_<QUOTE>_<SETTLE>-<tf>-<type>`
    (`futures`, `mark`, `funding_rate`...), `BTC_USDT-funding.csv.gz`, `BTC_USDT-1h-mark.csv.gz`.
    Any other name is a candle file whose coin and timeframe are unknown (None); a name holding
    "funding" or "mark" still marks the kind.
    """
    path = Path(path)
    split = _split_suffix(path.name)
    stem = split[0] if split else path.stem
    match = _NAME_RE.match(stem)
    if match is None or (match.group("tf") is None and match.group("kind") is None):
        lower = stem.lower()
        loose_kind: DataKind = (
            "funding" if "funding" in lower else "mark" if "mark" in lower else "candles"
        )
        return DataFileInfo(path=path, coin=None, quote=None, timeframe=None, kind=loose_kind)
    parts = match.group("pair").split("_")
    raw_kind = match.group("kind")
    kind: DataKind
    if raw_kind in ("funding", "funding_rate"):
        kind = "funding"
    elif raw_kind == "mark":
        kind = "mark"
    elif raw_kind == "trades":
        kind = "trades"
    else:
        kind = "candles"
    return DataFileInfo(
        path=path,
        coin=parts[0].upper(),
        quote=parts[1].upper() if len(parts) > 1 else None,
        timeframe=match.group("tf"),
        kind=kind,
    )


def _bad(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {problem}")


def _read_json(path: Path) -> pd.DataFrame:
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        payload = json.load(handle)
    if isinstance(payload, list):
        if not payload:
            return pd.DataFrame(columns=["date", *CANDLE_COLUMNS])
        if all(isinstance(row, list) for row in payload):
            width = len(payload[0])
            if width < 5:
                raise ValueError(
                    f"rows have {width} values; expected [time, open, high, low, close, volume]"
                )
            names = ["date", *CANDLE_COLUMNS][:width] + [f"extra{i}" for i in range(width - 6)]
            return pd.DataFrame(payload, columns=names)
        if all(isinstance(row, dict) for row in payload):
            return pd.DataFrame.from_records(payload)
        raise ValueError("a JSON array must hold rows [time, open, ...] or objects")
    if isinstance(payload, dict) and all(isinstance(col, dict) for col in payload.values()):
        # pandas "columns" orient: {"date": {"0": ms, ...}, "open": {...}}.
        return pd.DataFrame({name: pd.Series(col) for name, col in payload.items()})
    raise ValueError("JSON is neither freqtrade rows nor a pandas columns-orient object")


def read_table(path: Path) -> pd.DataFrame:
    """Read a data file into a raw frame by its suffix; `ConfigError` when it cannot be read."""
    split = _split_suffix(path.name)
    if split is None:
        raise _bad(path, f"unknown file type; use one of {', '.join(DATA_SUFFIXES)}")
    if not path.is_file():
        raise _bad(path, "no such file")
    suffix = split[1]
    try:
        if suffix.startswith(".csv"):
            return pd.read_csv(path)
        if suffix == ".feather":
            return pd.read_feather(path)
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
            return frame.reset_index() if isinstance(frame.index, pd.DatetimeIndex) else frame
        return _read_json(path)
    except (ValueError, OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _bad(path, f"cannot be read as {suffix}: {error}") from error
    except Exception as error:  # pyarrow and parsers raise their own types
        raise _bad(path, f"cannot be read as {suffix}: {type(error).__name__}: {error}") from error


def _numbers_to_utc(values: pd.Series, column: str) -> pd.DatetimeIndex:
    numbers = values.astype("int64") if values.dtype.kind in "iu" else values.astype(float)
    magnitude = float(np.nanmax(np.abs(numbers.to_numpy(dtype=float)))) if len(numbers) else 0.0
    unit: Literal["s", "ms", "us", "ns"]
    if column.endswith("_ms"):
        unit = "ms"
    elif magnitude < 1e11:
        unit = "s"
    elif magnitude < 1e14:
        unit = "ms"
    elif magnitude < 1e17:
        unit = "us"
    else:
        unit = "ns"
    return pd.DatetimeIndex(pd.to_datetime(numbers.to_numpy(), unit=unit, utc=True))


def _time_index(raw: pd.DataFrame, path: Path) -> pd.DatetimeIndex:
    lower = {str(name).lower(): name for name in raw.columns}
    column = next((lower[name] for name in _TIME_COLUMNS if name in lower), None)
    if column is None:
        raise _bad(
            path,
            f"no time column; expected one of {', '.join(_TIME_COLUMNS)} "
            f"(columns found: {', '.join(map(str, raw.columns))})",
        )
    values = raw[column]
    try:
        if values.dtype.kind in "iuf":
            index = _numbers_to_utc(values, str(column).lower())
        elif values.dtype.kind == "M":
            index = pd.DatetimeIndex(values)
            index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        else:
            index = pd.DatetimeIndex(pd.to_datetime(values, utc=True, format="ISO8601"))
    except (ValueError, TypeError, OverflowError) as error:
        raise _bad(path, f"column {column!r} does not hold times: {error}") from error
    if index.hasnans:
        empty = int(np.count_nonzero(index.isna()))
        raise _bad(path, f"column {column!r} has {empty} empty time(s)")
    return index.as_unit("ns")


def _numeric_columns(
    raw: pd.DataFrame, path: Path, names: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    lower = {str(name).lower(): name for name in raw.columns}
    missing = [name for name in names if name not in lower and name not in optional]
    if missing:
        raise _bad(
            path,
            f"missing column(s) {', '.join(missing)} "
            f"(columns found: {', '.join(map(str, raw.columns))}); is this a candle file?",
        )
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in lower:
            out[name] = np.full(len(raw), np.nan)
            continue
        try:
            out[name] = pd.to_numeric(raw[lower[name]], errors="raise").to_numpy(dtype=float)
        except (ValueError, TypeError) as error:
            raise _bad(
                path, f"column {name!r} holds values that are not numbers: {error}"
            ) from error
    return out


def _clean(frame: pd.DataFrame, path: Path, what: str) -> pd.DataFrame:
    if not frame.index.is_monotonic_increasing:
        frame = frame.sort_index(kind="stable")
    duplicated = frame.index.duplicated(keep="last")
    if duplicated.any():
        log.warning(
            "%s: dropped %d duplicate %s time(s); the last row of each kept",
            path,
            int(duplicated.sum()),
            what,
        )
        frame = frame[~duplicated]
    return frame


def _load_ohlc(
    path: Path, *, columns: tuple[str, ...], optional: tuple[str, ...], timeframe: str | None
) -> pd.DataFrame:
    raw = read_table(path)
    if raw.empty:
        raise _bad(path, "has no rows")
    index = _time_index(raw, path)
    values = _numeric_columns(raw, path, columns, optional)
    frame = pd.DataFrame(values, index=pd.DatetimeIndex(index, name=CANDLE_INDEX_NAME))
    prices = frame[list(MARK_COLUMNS)]
    empty = prices.isna().any(axis=1)
    if empty.any():
        first = frame.index[int(np.argmax(empty.to_numpy()))]
        raise _bad(path, f"{int(empty.sum())} candle(s) lack a price, the first at {first}")
    frame = _clean(frame, path, "candle")
    step = timeframe or describe_data_file(path).timeframe or infer_timeframe(frame)
    if step is not None:
        gaps = find_gaps(frame, step)
        if not gaps.empty:
            log.warning(
                "%s: %d missing %s candle(s) in %d gap(s), the first at %s; they are not filled",
                path,
                int(gaps["missing"].sum()),
                step,
                len(gaps),
                gaps["start"].iloc[0],
            )
    return frame


def load_candles(path: Path | str, *, timeframe: str | None = None) -> pd.DataFrame:
    """Load a candle file: float `open, high, low, close, volume` on a UTC `open_time` index.

    `timeframe` (e.g. "5m") is only used to report gaps; by default it comes from the file name
    or the spacing of the candles. Raises `ConfigError` naming the file when it cannot be used.
    """
    return _load_ohlc(Path(path), columns=CANDLE_COLUMNS, optional=(), timeframe=timeframe)


def load_mark_candles(path: Path | str, *, timeframe: str | None = None) -> pd.DataFrame:
    """Load a mark-price candle file: float `open, high, low, close` on a UTC `open_time` index."""
    return _load_ohlc(Path(path), columns=MARK_COLUMNS, optional=(), timeframe=timeframe)


def load_funding(path: Path | str) -> pd.Series:
    """Load funding settlements: rates (0.0001 = 0.01 % per interval) by UTC settlement time.

    Reads `timestamp_ms,funding_rate` files and freqtrade's `*-funding_rate.feather`, which keeps
    the rate in `open`. Settlement times are floored to the second, because exchanges stamp them
    a few milliseconds late (00:00:00.017) and a settlement belongs to its round time.
    """
    path = Path(path)
    raw = read_table(path)
    if raw.empty:
        raise _bad(path, "has no rows")
    index = _time_index(raw, path).floor("s")
    lower = {str(name).lower(): name for name in raw.columns}
    column = next((lower[name] for name in _FUNDING_COLUMNS if name in lower), None)
    if column is None and "open" in lower:
        column = lower["open"]  # freqtrade's OHLCV-shaped funding frame
    if column is None:
        raise _bad(
            path,
            "no funding-rate column; expected funding_rate (or freqtrade's layout with the "
            f"rate in open); columns found: {', '.join(map(str, raw.columns))}",
        )
    try:
        rates = pd.to_numeric(raw[column], errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as error:
        raise _bad(path, f"column {column!r} holds values that are not numbers: {error}") from error
    if np.isnan(rates).any():
        raise _bad(path, f"{int(np.isnan(rates).sum())} funding rate(s) are empty")
    series = pd.Series(rates, index=pd.DatetimeIndex(index, name=FUNDING_INDEX_NAME))
    series = series.rename("funding_rate")
    if not series.index.is_monotonic_increasing:
        series = series.sort_index(kind="stable")
    duplicated = series.index.duplicated(keep="last")
    if duplicated.any():
        log.warning("%s: dropped %d duplicate settlement(s)", path, int(duplicated.sum()))
        series = series[~duplicated]
    return series


def infer_timeframe(frame: pd.DataFrame | pd.Series) -> str | None:
    """Return the most common spacing of the index as a timeframe ("5m", "1h"), or None."""
    if len(frame.index) < 2:
        return None
    steps = np.diff(index_ns(frame))
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    values, counts = np.unique(steps, return_counts=True)
    return timedelta_to_timeframe(timedelta(microseconds=int(values[np.argmax(counts)]) // 1000))


def timedelta_to_timeframe(step: timedelta) -> str:
    """Return the ccxt-style name of a candle length: 300 s -> "5m", 4 h -> "4h"."""
    seconds = int(step.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise ValueError(f"{step} is not a whole number of seconds")


def find_gaps(frame: pd.DataFrame | pd.Series, timeframe: str) -> pd.DataFrame:
    """Return the holes in a candle index: one row per gap with `start`, `end` (the first and
    last missing open times) and `missing` (how many candles)."""
    step_ns = int(timeframe_to_timedelta(timeframe) / timedelta(microseconds=1)) * 1000
    times = index_ns(frame)
    if len(times) < 2:
        return pd.DataFrame({"start": [], "end": [], "missing": []})
    diffs = np.diff(times)
    holes = np.flatnonzero(diffs > step_ns)
    starts = times[holes] + step_ns
    ends = times[holes + 1] - step_ns
    missing = (diffs[holes] // step_ns) - 1
    return pd.DataFrame(
        {
            "start": pd.to_datetime(starts, utc=True),
            "end": pd.to_datetime(ends, utc=True),
            "missing": missing.astype("int64"),
        }
    )


def step_of(timeframe: str) -> timedelta:
    """Return the length of `timeframe`, raising `ConfigError` when it is not a timeframe."""
    try:
        return timeframe_to_timedelta(timeframe)
    except ValueError as error:
        raise ConfigError(str(error)) from error
