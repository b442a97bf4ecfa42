"""Candle, funding and mark files: every shared file loads, bad files say what is wrong."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.errors import ConfigError
from app.market import (
    describe_data_file,
    find_gaps,
    infer_timeframe,
    load_candles,
    load_data_set,
    load_funding,
    load_mark_candles,
)
from tests.conftest import shared_data

# (relative path, rows, first open time, last open time), from the READMEs beside the data.
FREQTRADE_CANDLES = [
    ("ADA_BTC-5m.feather", 5720, "2018-01-10 04:55", "2018-01-30 04:50"),
    ("DASH_BTC-5m.feather", 5758, "2018-01-10 04:55", "2018-01-30 04:50"),
    ("ETC_BTC-5m.feather", 5759, "2018-01-10 04:55", "2018-01-30 04:45"),
    ("ETH_BTC-5m.feather", 5760, "2018-01-10 04:55", "2018-01-30 04:50"),
    ("LTC_BTC-5m.feather", 5760, "2018-01-10 04:55", "2018-01-30 04:50"),
    ("NXT_BTC-5m.feather", 5760, "2018-01-10 04:55", "2018-01-30 04:50"),
    ("TRX_BTC-5m.feather", 5754, "2018-01-10 04:55", "2018-01-30 04:50"),
    ("XLM_BTC-5m.feather", 5760, "2018-01-10 04:55", "2018-01-30 04:50"),
    ("XMR_BTC-5m.feather", 5758, "2018-01-10 04:55", "2018-01-30 04:50"),
    ("ZEC_BTC-5m.feather", 5757, "2018-01-10 04:55", "2018-01-30 04:45"),
    ("UNITTEST_BTC-1m.feather", 13681, "2017-11-04 23:02", "2017-11-14 22:59"),
    ("UNITTEST_BTC-30m.feather", 1920, "2017-12-03 13:00", "2018-01-12 12:30"),
    ("XRP_ETH-1m.feather", 2469, "2019-10-11 00:00", "2019-10-13 11:19"),
    ("XRP_ETH-5m.feather", 706, "2019-10-11 00:00", "2019-10-13 11:15"),
    ("futures/XRP_USDT_USDT-5m-futures.feather", 1999, "2021-11-15 00:00", "2021-11-21 22:30"),
    ("futures/XRP_USDT_USDT-1h-futures.feather", 100, "2021-11-17 01:00", "2021-11-21 04:00"),
    ("futures/XRP_USDT_USDT-1h-futures.json.gz", 100, "2021-11-17 01:00", "2021-11-21 04:00"),
    ("orderflow/candles.json", 10999, "2023-01-02 16:45", "2023-02-09 21:15"),
    (
        "orderflow/populate_dataframe_with_trades_DF.feather",
        999,
        "2024-01-28 23:55",
        "2024-02-01 11:05",
    ),
]
FREQTRADE_MARKS = [
    ("futures/XRP_USDT_USDT-1h-mark.feather", 100, "2021-11-15 06:00", "2021-11-19 09:00"),
    ("futures/XRP_USDT_USDT-8h-mark.feather", 91, "2021-11-18 00:00", "2021-12-18 00:00"),
]
# Gaps per file, from the "gaps" column of the freqtrade README.
FREQTRADE_GAPS = {
    "ADA_BTC-5m.feather": 40,
    "DASH_BTC-5m.feather": 2,
    "TRX_BTC-5m.feather": 6,
    "XMR_BTC-5m.feather": 2,
    "ZEC_BTC-5m.feather": 2,
    "UNITTEST_BTC-1m.feather": 717,
    "XRP_ETH-1m.feather": 1091,
    "XRP_ETH-5m.feather": 6,
    "ETH_BTC-5m.feather": 0,
}
MARKET_COINS = ["BTC", "ETH", "SOL", "BNB", "DOGE", "XRP"]


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def check_candles(frame: pd.DataFrame, rows: int, first: str, last: str) -> None:
    assert len(frame) == rows
    assert frame.index[0] == utc(first)
    assert frame.index[-1] == utc(last)
    assert frame.index.name == "open_time"
    assert str(frame.index.tz) == "UTC"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique


@pytest.mark.parametrize(("name", "rows", "first", "last"), FREQTRADE_CANDLES, ids=lambda v: str(v))
def test_every_freqtrade_candle_file_loads_with_its_documented_rows_and_span(
    name: str, rows: int, first: str, last: str
) -> None:
    frame = load_candles(shared_data("freqtrade-testdata", name))
    check_candles(frame, rows, first, last)
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == np.float64 for dtype in frame.dtypes)


@pytest.mark.parametrize(("name", "rows", "first", "last"), FREQTRADE_MARKS, ids=lambda v: str(v))
def test_freqtrade_mark_files_load_as_price_candles(
    name: str, rows: int, first: str, last: str
) -> None:
    frame = load_mark_candles(shared_data("freqtrade-testdata", name))
    check_candles(frame, rows, first, last)
    assert list(frame.columns) == ["open", "high", "low", "close"]


def test_freqtrade_funding_file_keeps_the_rate_from_open_and_floors_the_jittered_times() -> None:
    """The file stamps settlements 00:00:00.017, 08:00:00.007...; they belong to 00:00, 08:00."""
    rates = load_funding(
        shared_data("freqtrade-testdata", "futures", "XRP_USDT_USDT-8h-funding_rate.feather")
    )
    assert len(rates) == 91
    assert rates.index[0] == utc("2021-11-18 00:00")
    assert rates.index[-1] == utc("2021-12-18 00:00")
    assert (rates.index == rates.index.floor("s")).all()
    assert rates.min() == pytest.approx(-0.002193, rel=1e-3)
    assert rates.max() == pytest.approx(0.000583, rel=1e-3)
    assert int((rates == 0.0001).sum()) == 70


@pytest.mark.parametrize("coin", MARKET_COINS)
def test_every_market_file_loads_with_its_documented_rows_and_span(coin: str) -> None:
    folder = shared_data("market")
    check_candles(
        load_candles(folder / f"{coin}_USDT-5m.csv.gz"),
        119520,
        "2024-12-31 00:00",
        "2026-02-18 23:55",
    )
    check_candles(
        load_candles(folder / f"{coin}_USDT-1h.csv.gz"),
        9960,
        "2024-12-31 00:00",
        "2026-02-18 23:00",
    )
    check_candles(
        load_mark_candles(folder / f"{coin}_USDT-1h-mark.csv.gz"),
        9960,
        "2024-12-31 00:00",
        "2026-02-18 23:00",
    )
    funding = load_funding(folder / f"{coin}_USDT-funding.csv.gz")
    assert len(funding) == 1245
    assert funding.index[0] == utc("2024-12-31 00:00")
    assert funding.index[-1] == utc("2026-02-18 16:00")


def test_market_files_cover_the_season_one_window_without_gaps() -> None:
    """README: 5,184 5m rows, 432 1h rows and 54 funding rows per coin from 2025-10-17 to
    2025-11-04 (exclusive), and no missing bars anywhere."""
    folder = shared_data("market")
    candles = load_candles(folder / "BTC_USDT-5m.csv.gz")
    funding = load_funding(folder / "BTC_USDT-funding.csv.gz")
    window = slice(utc("2025-10-17"), utc("2025-11-03 23:59:59"))
    assert len(candles.loc[window]) == 5184
    assert len(funding.loc[window]) == 54
    assert find_gaps(candles, "5m").empty
    assert find_gaps(funding, "8h").empty


@pytest.mark.parametrize(("name", "missing"), sorted(FREQTRADE_GAPS.items()))
def test_gaps_are_counted_as_the_readme_says_and_never_filled(name: str, missing: int) -> None:
    frame = load_candles(shared_data("freqtrade-testdata", name))
    timeframe = describe_data_file(name).timeframe
    assert timeframe is not None
    gaps = find_gaps(frame, timeframe)
    assert int(gaps["missing"].sum()) == missing
    step = pd.Timedelta(timeframe)
    expected_rows = (frame.index[-1] - frame.index[0]) // step + 1
    assert len(frame) == expected_rows - missing


def test_loading_a_file_with_gaps_logs_a_warning_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.market.files"):
        load_candles(shared_data("freqtrade-testdata", "ADA_BTC-5m.feather"))
    assert "ADA_BTC-5m.feather: 40 missing 5m candle(s) in 5 gap(s)" in caplog.text


def test_a_trades_file_is_refused_with_a_message_naming_it() -> None:
    path = shared_data("freqtrade-testdata", "orderflow", "public_trades_list.csv")
    with pytest.raises(ConfigError, match=r"public_trades_list\.csv: missing column\(s\) open"):
        load_candles(path)


@pytest.mark.parametrize(
    ("name", "coin", "quote", "timeframe", "kind"),
    [
        ("BTC_USDT-5m.csv.gz", "BTC", "USDT", "5m", "candles"),
        ("BTC_USDT_USDT-5m-futures.feather", "BTC", "USDT", "5m", "candles"),
        ("BTC-5m.csv", "BTC", None, "5m", "candles"),
        ("XRP_USDT_USDT-8h-funding_rate.feather", "XRP", "USDT", "8h", "funding"),
        ("BTC_USDT-funding.csv.gz", "BTC", "USDT", None, "funding"),
        ("BTC_USDT-1h-mark.csv.gz", "BTC", "USDT", "1h", "mark"),
        ("XRP_USDT_USDT-1h-futures.json.gz", "XRP", "USDT", "1h", "candles"),
        ("XRP_ETH-trades.feather", "XRP", "ETH", None, "trades"),
        ("candles.json", None, None, None, "candles"),
        ("my-funding-dump.csv", None, None, None, "funding"),
        ("populate_dataframe_with_trades_DF.feather", None, None, None, "candles"),
    ],
)
def test_file_names_tell_coin_timeframe_and_kind(
    name: str, coin: str | None, quote: str | None, timeframe: str | None, kind: str
) -> None:
    info = describe_data_file(Path("some/folder") / name)
    assert (info.coin, info.quote, info.timeframe, info.kind) == (coin, quote, timeframe, kind)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_are_sorted_and_duplicates_keep_the_last(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "BTC-1m.csv",
        "timestamp_ms,open,high,low,close,volume\n"
        "1700000060000,2,2,2,2,1\n"
        "1700000000000,1,1,1,1,1\n"
        "1700000060000,3,3,3,3,1\n",
    )
    frame = load_candles(path)
    assert frame["close"].tolist() == [1.0, 3.0]
    assert frame.index[0] == pd.Timestamp(1_700_000_000_000, unit="ms", tz="UTC")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("date", "2023-11-14T22:13:20Z"),
        ("date", "2023-11-14 22:13:20"),
        ("timestamp", "1700000000"),
        ("timestamp", "1700000000000"),
        ("open_time", "1700000000000000000"),
    ],
)
def test_time_columns_in_iso_text_seconds_ms_or_ns_all_mean_the_same_instant(
    tmp_path: Path, column: str, value: str
) -> None:
    path = write_csv(
        tmp_path / "x.csv", f"{column},open,high,low,close,volume\n{value},1,2,0.5,1.5,10\n"
    )
    assert load_candles(path).index[0] == pd.Timestamp("2023-11-14 22:13:20", tz="UTC")


def test_freqtrade_json_rows_and_parquet_load_like_csv(tmp_path: Path) -> None:
    rows = [[1700000000000, 1, 2, 0.5, 1.5, 10], [1700000300000, 1.5, 2, 1, 1.2, 20]]
    with gzip.open(tmp_path / "ETH_USDT-5m.json.gz", "wt") as handle:
        json.dump(rows, handle)
    from_json = load_candles(tmp_path / "ETH_USDT-5m.json.gz")
    from_json.to_parquet(tmp_path / "ETH-5m.parquet")
    from_parquet = load_candles(tmp_path / "ETH-5m.parquet")
    pd.testing.assert_frame_equal(from_json, from_parquet, check_freq=False)
    assert from_json["volume"].tolist() == [10.0, 20.0]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("a.csv", "date,open,high,low,close,volume\n", "has no rows"),
        ("b.csv", "date,open,high,low\n2023-01-01,1,1,1\n", r"missing column\(s\) close, volume"),
        (
            "c.csv",
            "date,open,high,low,close,volume\n2023-01-01,1,x,1,1,1\n",
            "'high' holds values that are not numbers",
        ),
        ("d.csv", "open,high,low,close,volume\n1,1,1,1,1\n", "no time column"),
        (
            "e.csv",
            "date,open,high,low,close,volume\nnot a date,1,1,1,1,1\n",
            "'date' does not hold times",
        ),
        (
            "f.csv",
            "date,open,high,low,close,volume\n2023-01-01,1,,1,1,1\n",
            "1 candle\\(s\\) lack a price",
        ),
        ("g.json", "{not json", "cannot be read as .json"),
        ("h.txt", "whatever", "unknown file type"),
    ],
)
def test_bad_files_raise_config_error_naming_the_file_and_the_problem(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    path = write_csv(tmp_path / name, content)
    with pytest.raises(ConfigError, match=problem) as caught:
        load_candles(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_candles(tmp_path / "BTC-5m.csv")


def test_funding_csv_reads_rates_by_settlement_time(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "BTC_USDT-funding.csv",
        "timestamp_ms,funding_rate\n1735632000000,0.0002\n1735603200000,-0.0001\n",
    )
    rates = load_funding(path)
    assert rates.tolist() == [-0.0001, 0.0002]
    assert rates.index.name == "settled_at"
    assert rates.name == "funding_rate"


def test_infer_timeframe_takes_the_most_common_spacing() -> None:
    index = pd.to_datetime([0, 300, 600, 1200, 1500], unit="s", utc=True)
    assert infer_timeframe(pd.DataFrame(index=index)) == "5m"


def test_data_set_from_the_market_folder_has_six_coins_on_5m_with_funding_and_marks() -> None:
    data = load_data_set([shared_data("market")], coins=["BTC", "ETH"])
    assert data.coins == ("BTC", "ETH")
    assert data.timeframe == "5m"
    assert set(data.funding) == {"BTC", "ETH"}
    assert set(data.marks) == {"BTC", "ETH"}
    assert len(data.candles["BTC"]) == 119520
    assert len(data.marks["ETH"]) == 9960


def test_data_set_of_the_freqtrade_futures_folder_takes_5m_candles_8h_funding_and_1h_marks() -> (
    None
):
    data = load_data_set([shared_data("freqtrade-testdata", "futures")])
    assert data.coins == ("XRP",)
    assert data.timeframe == "5m"
    assert len(data.candles["XRP"]) == 1999
    assert len(data.funding["XRP"]) == 91
    assert len(data.marks["XRP"]) == 100


def test_unnamed_candle_files_take_their_coins_from_the_symbols_in_order() -> None:
    path = shared_data("freqtrade-testdata", "orderflow", "candles.json")
    data = load_data_set([path], coins=["BTC"])
    assert data.coins == ("BTC",)
    with pytest.raises(ConfigError, match="do not say which coin"):
        load_data_set([path])


def test_asking_for_a_coin_without_a_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no candle file for SOL"):
        load_data_set([shared_data("freqtrade-testdata", "futures")], coins=["XRP", "SOL"])
