"""A fake crypto exchange on 127.0.0.1 that real ccxt talks to (Binance USD-M and Hyperliquid).

It answers the REST paths ccxt calls for market data, with payloads shaped like the exchanges'
(and like the recordings in ../shared/data/ccxt-static/), built from candle frames you give it or
from a deterministic synthetic random walk. Point ccxt at it with `EXCHANGE_API_URL=<url>` (the
adapter replaces the scheme and host of every REST URL) and `EXCHANGE_ID=binanceusdm` or
`hyperliquid`.

Use from a test (sync or async; the server runs in its own threads)::

    with FakeExchange(latency_s=0.05) as fake:      # or FakeExchange().start() ... .stop()
        url = fake.url                                 # "http://127.0.0.1:<ephemeral port>"
        fake.fail("/fapi/v1/klines", "429", times=1)   # next request to that path gets a 429
        ...
        fake.requests_to("/fapi/v1/klines")            # what ccxt asked, in order

From another process (e.g. `arena run --once` in a subprocess), start it in the test process
and pass `fake.url` in the subprocess's environment, or run it standalone:
`python -m tests.fakes.exchange --latency-ms 50` prints its URL on the first line.

Data and clock:
- `candles`: {coin: OHLCV frame at `base_timeframe`} (as `load_candles` returns). Default:
  `synthetic_candles(coins)`, 1m candles for the 45 days around the real clock.
- `now`: the exchange's clock (or `clock`, a function returning epoch seconds, for a clock that
  moves). None (default) follows the real clock, so a subprocess that uses
  wall-clock time sees a consistent market. Candles with open time <= now are served; the last
  one is still forming (built from the base candles opened by then), like a real exchange.
- `funding_rate`, `open_interest`: values served per coin (dict or one number for all).

Knobs (all thread-safe, changeable while running):
- `latency_s`: seconds every request waits before it is answered.
- `fail(path, mode, times=None)`: make requests whose path starts with `path` (for Hyperliquid,
  `"/info:candleSnapshot"` targets one request type) fail with `mode`: "429" (rate limited, with
  Retry-After), "500", "404", "timeout" (answer after `timeout_s`, default 30 s, later than any
  client waits, or at the next `reset()`), "malformed" (200 with a truncated JSON body) or
  "empty" (200 with `[]`).
  `times` limits how many requests fail (None: all). `clear_failures()` undoes it.
- `respond(path, payload, status=200)`: answer that path with a fixed JSON payload, e.g. a
  recorded response from ccxt-static.
- `drop(path)`: the exchange no longer offers that path (404 forever), to simulate a missing
  capability on the wire; ccxt's `has[...]` is unaffected (set that on the ccxt side).
- `hold_until_in_flight(count)`: hold every request until `count` are being answered at once,
  then answer them all (proof of concurrency that no machine's speed can fake or spoil).
- `requests` / `requests_to(path)`: the recorded requests (method, path, query, body);
  `max_in_flight`: the most requests it was answering at once (proof of concurrency);
  `reset()` forgets all of that and every knob.

Served for binanceusdm (prefix /fapi/v1 unless noted): exchangeInfo, klines, ticker/24hr,
premiumIndex, openInterest, fundingRate, time, and /futures/data/openInterestHist. For
hyperliquid: POST /info with type meta, metaAndAssetCtxs, candleSnapshot, fundingHistory,
allMids, spotMeta, spotMetaAndAssetCtxs and perpDexs.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

FailureMode = Literal["429", "500", "404", "timeout", "malformed", "empty"]

DEFAULT_COINS: tuple[str, ...] = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")

# Rough early-2026 price levels and Binance USD-M filters (tick size, step size, min notional),
# so markets parse like the real ones; the numbers need not be current.
_COIN_PROFILE: dict[str, dict[str, Any]] = {
    "BTC": {"price": 95000.0, "tick": "0.10", "step": "0.001", "min_notional": "100"},
    "ETH": {"price": 3300.0, "tick": "0.01", "step": "0.001", "min_notional": "20"},
    "SOL": {"price": 190.0, "tick": "0.0100", "step": "1", "min_notional": "5"},
    "BNB": {"price": 690.0, "tick": "0.010", "step": "0.01", "min_notional": "5"},
    "XRP": {"price": 2.3, "tick": "0.0001", "step": "0.1", "min_notional": "5"},
    "DOGE": {"price": 0.32, "tick": "0.000010", "step": "1", "min_notional": "5"},
}
_HL_SZ_DECIMALS = {"BTC": 5, "ETH": 4, "SOL": 2, "BNB": 3, "XRP": 0, "DOGE": 0}
_TIMEFRAME_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def timeframe_ms(timeframe: str) -> int:
    """Return the length of a ccxt timeframe ("1m", "4h") in milliseconds."""
    return int(timeframe[:-1]) * _TIMEFRAME_SECONDS[timeframe[-1]] * 1000


def synthetic_candles(
    coins: Iterable[str] = DEFAULT_COINS,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    timeframe: str = "1m",
    seed: int = 7,
) -> dict[str, pd.DataFrame]:
    """Return a deterministic random walk of OHLCV candles per coin, 0.1 % volatility per candle.

    Default window: 44 days before the real clock's current minute to 1 day after it.
    """
    step_ms = timeframe_ms(timeframe)
    now_ms = int(time.time() * 1000)
    end_ms = int(end.timestamp() * 1000) if end else now_ms + 86_400_000
    start_ms = int(start.timestamp() * 1000) if start else now_ms - 44 * 86_400_000
    start_ms -= start_ms % step_ms
    times = np.arange(start_ms, end_ms, step_ms, dtype=np.int64)
    index = pd.DatetimeIndex(pd.to_datetime(times, unit="ms", utc=True), name="open_time")
    rng = np.random.default_rng(seed)
    out: dict[str, pd.DataFrame] = {}
    for coin in coins:
        base = float(_COIN_PROFILE.get(coin, {"price": 10.0})["price"])
        returns = rng.normal(0.0, 0.001, size=len(times))
        close = base * np.exp(np.cumsum(returns))
        open_ = np.r_[base, close[:-1]]
        wiggle = np.abs(rng.normal(0.0, 0.0005, size=len(times)))
        high = np.maximum(open_, close) * (1 + wiggle)
        low = np.minimum(open_, close) * (1 - wiggle)
        volume = rng.gamma(2.0, 50.0, size=len(times))
        out[coin] = pd.DataFrame(
            {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
            index=index,
        )
    return out


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    received_at: float

    @property
    def key(self) -> str:
        """Return the path, with the Hyperliquid info type appended (`/info:candleSnapshot`)."""
        if self.body and "type" in self.body:
            return f"{self.path}:{self.body['type']}"
        return self.path


@dataclass
class _Failure:
    mode: FailureMode
    remaining: int | None


@dataclass
class _Series:
    """One coin's candles as arrays, for fast slicing per request."""

    open_ms: np.ndarray
    values: np.ndarray  # columns open, high, low, close, volume
    resampled: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    # The stdlib's backlog of 5 drops a snapshot's burst of connections (the client's SYN is
    # retried a second later), which would look like exchange latency.
    request_queue_size = 256
    daemon_threads = True


class FakeExchange:
    """A loopback HTTP server speaking enough of Binance USD-M and Hyperliquid for market data."""

    def __init__(
        self,
        candles: Mapping[str, pd.DataFrame] | None = None,
        *,
        base_timeframe: str = "1m",
        now: datetime | None = None,
        latency_s: float = 0.0,
        quote: str = "USDT",
        funding_rate: float | Mapping[str, float] = 0.0001,
        open_interest: float | Mapping[str, float] = 12345.0,
        timeout_s: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        source = candles if candles is not None else synthetic_candles(timeframe=base_timeframe)
        self.coins: tuple[str, ...] = tuple(source)
        self.base_timeframe = base_timeframe
        self.base_ms = timeframe_ms(base_timeframe)
        self.quote = quote
        self.now = now
        self.clock = clock
        self.latency_s = latency_s
        self.timeout_s = timeout_s
        self._funding = funding_rate
        self._open_interest = open_interest
        self._series = {
            coin: _Series(
                open_ms=pd.DatetimeIndex(frame.index).as_unit("ms").asi8,
                values=frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=float),
            )
            for coin, frame in source.items()
        }
        self._lock = threading.Lock()
        self._failures: dict[str, _Failure] = {}
        self._dropped: set[str] = set()
        self._canned: dict[str, tuple[int, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._gate = threading.Condition(self._lock)
        self._gate_count: int | None = None
        self._gate_limit_s = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Set (and replaced) by reset() and stop(): releases requests held by "timeout".
        self._release = threading.Event()

    # Lifecycle.

    def start(self) -> FakeExchange:
        """Start serving on an ephemeral loopback port; return self."""
        handler = _handler_class(self)
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-exchange", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (requests still sleeping are abandoned)."""
        self._stopping.set()
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Return the base URL, e.g. http://127.0.0.1:40123."""
        if self._server is None:
            raise RuntimeError("the fake exchange is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # Knobs.

    def fail(self, path: str, mode: FailureMode, *, times: int | None = None) -> None:
        """Make requests whose key starts with `path` fail with `mode` (`times` of them, or all)."""
        with self._lock:
            self._failures[path] = _Failure(mode, times)

    def clear_failures(self) -> None:
        """Answer every path normally again (dropped paths stay dropped)."""
        with self._lock:
            self._failures.clear()

    def respond(self, path: str, payload: Any, *, status: int = 200) -> None:
        """Answer requests whose key starts with `path` with `payload` (e.g. a recording)."""
        with self._lock:
            self._canned[path] = (status, payload)

    def drop(self, path: str) -> None:
        """Answer 404 to every request whose key starts with `path`."""
        with self._lock:
            self._dropped.add(path)

    def hold_until_in_flight(self, count: int, *, limit_s: float = 30.0) -> None:
        """Hold each request until `count` are in flight at once; then answer every one.

        Should `count` never be reached, the gate opens after `limit_s` (so a test fails on its
        assertion instead of hanging).
        """
        with self._gate:
            self._gate_count = count
            self._gate_limit_s = limit_s
            self._gate.notify_all()

    def reset(self) -> None:
        """Forget recorded requests, failures, drops, canned answers and the gate; latency 0."""
        with self._lock:
            self._gate_count = None
            self._gate.notify_all()
            self._failures.clear()
            self._dropped.clear()
            self._canned.clear()
            self.requests.clear()
            self.max_in_flight = 0
            self._release.set()
            self._release = threading.Event()
        self.latency_s = 0.0

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Return the recorded requests whose key starts with `path`."""
        with self._lock:
            return [r for r in self.requests if r.key.startswith(path)]

    def clock_ms(self) -> int:
        """Return the exchange's current time in milliseconds."""
        if self.now is not None:
            moment = self.now.timestamp()
        else:
            moment = self.clock() if self.clock is not None else time.time()
        return int(moment * 1000)

    def funding_rate(self, coin: str) -> float:
        """Return the funding rate served for `coin`."""
        rate = self._funding
        return float(rate.get(coin, 0.0001) if isinstance(rate, Mapping) else rate)

    def open_interest(self, coin: str) -> float:
        """Return the open interest (in coins) served for `coin`."""
        value = self._open_interest
        return float(value.get(coin, 0.0) if isinstance(value, Mapping) else value)

    # Request handling (called from the server's threads).

    def _record(
        self, request: RecordedRequest
    ) -> _Failure | Literal["dropped"] | tuple[int, Any] | None:
        with self._lock:
            self.requests.append(request)
            if any(request.key.startswith(path) for path in self._dropped):
                return "dropped"
            for path, failure in self._failures.items():
                if request.key.startswith(path):
                    if failure.remaining is not None:
                        if failure.remaining <= 0:
                            continue
                        failure.remaining -= 1
                    return failure
            for path, canned in self._canned.items():
                if request.key.startswith(path):
                    return canned
        return None

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _hold(self, seconds: float) -> None:
        # A request that "times out": held until the next reset() (or stop()) at the latest.
        with self._lock:
            release = self._release
        release.wait(seconds)

    def _pass_gate(self) -> None:
        with self._gate:
            if self._gate_count is None:
                return
            self._gate.notify_all()
            self._gate.wait_for(
                lambda: (
                    self._gate_count is None
                    or self.in_flight >= self._gate_count
                    or self._stopping.is_set()
                ),
                timeout=self._gate_limit_s,
            )
            # Reached (or given up on): the gate stays open for the requests that follow.
            self._gate_count = None
            self._gate.notify_all()

    def candles_at(self, coin: str, timeframe: str) -> tuple[np.ndarray, np.ndarray]:
        """Return (open times ms, OHLCV rows) up to the clock; the last one may be forming."""
        series = self._series[coin]
        now_ms = self.clock_ms()
        visible = int(np.searchsorted(series.open_ms, now_ms, side="right"))
        if timeframe == self.base_timeframe:
            return series.open_ms[:visible], series.values[:visible]
        size = timeframe_ms(timeframe)
        with self._lock:
            cached = series.resampled.get(timeframe)
            if cached is None:
                cached = _resample(series.open_ms, series.values, size)
                series.resampled[timeframe] = cached
        times, rows = cached
        last = int(np.searchsorted(times, now_ms, side="right"))
        times, rows = times[:last], rows[:last].copy()
        if last and times[-1] + size > now_ms:
            # The candle containing `now` only holds the base candles opened so far.
            first = int(np.searchsorted(series.open_ms, times[-1], side="left"))
            part = series.values[first:visible]
            if len(part):
                rows[-1] = [
                    part[0, 0],
                    part[:, 1].max(),
                    part[:, 2].min(),
                    part[-1, 3],
                    part[:, 4].sum(),
                ]
        return times, rows

    def price(self, coin: str) -> float:
        """Return the last traded price: the close of the newest (possibly forming) base candle."""
        _, rows = self.candles_at(coin, self.base_timeframe)
        return (
            float(rows[-1, 3])
            if len(rows)
            else float(_COIN_PROFILE.get(coin, {"price": 1.0})["price"])
        )


def _resample(open_ms: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    buckets = open_ms - np.mod(open_ms, size)
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(open_ms)] - 1
    rows = np.column_stack(
        [
            values[starts, 0],
            np.maximum.reduceat(values[:, 1], starts),
            np.minimum.reduceat(values[:, 2], starts),
            values[ends, 3],
            np.add.reduceat(values[:, 4], starts),
        ]
    )
    return buckets[starts], rows


def _num(value: float) -> str:
    return repr(float(value))


class _Binance:
    """Payloads of Binance USD-M futures (fapi), as ccxt's binanceusdm parses them."""

    def __init__(self, fake: FakeExchange) -> None:
        self.fake = fake

    def coin_of(self, symbol: str | None) -> str | None:
        if not symbol:
            return None
        for coin in self.fake.coins:
            if symbol == f"{coin}{self.fake.quote}":
                return coin
        return None

    def exchange_info(self) -> Any:
        quote = self.fake.quote
        symbols = []
        for coin in self.fake.coins:
            profile = _COIN_PROFILE.get(coin, {"tick": "0.001", "step": "1", "min_notional": "5"})
            symbols.append(
                {
                    "symbol": f"{coin}{quote}",
                    "pair": f"{coin}{quote}",
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000",
                    "baseAsset": coin,
                    "quoteAsset": quote,
                    "marginAsset": quote,
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "settlePlan": 0,
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": profile["tick"],
                            "maxPrice": "4529764",
                            "tickSize": profile["tick"],
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "stepSize": profile["step"],
                            "maxQty": "1000000",
                            "minQty": profile["step"],
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "stepSize": profile["step"],
                            "maxQty": "120000",
                            "minQty": profile["step"],
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": profile["min_notional"]},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self.fake.clock_ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 2400,
                },
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": quote, "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": symbols,
        }

    def klines(self, query: Mapping[str, str]) -> Any:
        coin = self.coin_of(query.get("symbol"))
        if coin is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        interval = query.get("interval", "1m")
        size = timeframe_ms(interval)
        times, rows = self.fake.candles_at(coin, interval)
        limit = min(int(query.get("limit", 500)), 1500)
        lo, hi = 0, len(times)
        if "startTime" in query:
            lo = int(np.searchsorted(times, int(query["startTime"]), side="left"))
        if "endTime" in query:
            hi = int(np.searchsorted(times, int(query["endTime"]), side="right"))
        picked = (
            range(lo, min(hi, lo + limit))
            if "startTime" in query
            else range(max(lo, hi - limit), hi)
        )
        out = []
        for i in picked:
            o, h, low, c, v = rows[i]
            out.append(
                [
                    int(times[i]),
                    _num(o),
                    _num(h),
                    _num(low),
                    _num(c),
                    _num(v),
                    int(times[i]) + size - 1,
                    _num(v * c),
                    100,
                    _num(v / 2),
                    _num(v * c / 2),
                    "0",
                ]
            )
        return 200, out

    def ticker(self, query: Mapping[str, str]) -> Any:
        coin = self.coin_of(query.get("symbol"))
        if coin is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        now_ms = self.fake.clock_ms()
        _, rows = self.fake.candles_at(coin, "1h")
        day = rows[-24:] if len(rows) else np.zeros((1, 5))
        last = self.fake.price(coin)
        opened = float(day[0, 0])
        return 200, {
            "symbol": f"{coin}{self.fake.quote}",
            "priceChange": _num(last - opened),
            "priceChangePercent": _num((last / opened - 1) * 100 if opened else 0.0),
            "weightedAvgPrice": _num(last),
            "lastPrice": _num(last),
            "lastQty": "0.010",
            "openPrice": _num(opened),
            "highPrice": _num(float(day[:, 1].max())),
            "lowPrice": _num(float(day[:, 2].min())),
            "volume": _num(float(day[:, 4].sum())),
            "quoteVolume": _num(float(day[:, 4].sum()) * last),
            "openTime": now_ms - 86_400_000,
            "closeTime": now_ms,
            "firstId": 1,
            "lastId": 1000,
            "count": 1000,
        }

    def premium_index(self, query: Mapping[str, str]) -> Any:
        coin = self.coin_of(query.get("symbol"))
        if coin is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        now_ms = self.fake.clock_ms()
        period = 8 * 3_600_000
        price = self.fake.price(coin)
        return 200, {
            "symbol": f"{coin}{self.fake.quote}",
            "markPrice": _num(price),
            "indexPrice": _num(price),
            "estimatedSettlePrice": _num(price),
            "lastFundingRate": _num(self.fake.funding_rate(coin)),
            "interestRate": "0.00010000",
            "nextFundingTime": now_ms - now_ms % period + period,
            "time": now_ms,
        }

    def open_interest(self, query: Mapping[str, str]) -> Any:
        coin = self.coin_of(query.get("symbol"))
        if coin is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        return 200, {
            "openInterest": _num(self.fake.open_interest(coin)),
            "symbol": f"{coin}{self.fake.quote}",
            "time": self.fake.clock_ms(),
        }

    def open_interest_history(self, query: Mapping[str, str]) -> Any:
        coin = self.coin_of(query.get("symbol"))
        if coin is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        size = timeframe_ms(query.get("period", "5m"))
        limit = min(int(query.get("limit", 30)), 500)
        now_ms = self.fake.clock_ms()
        last = now_ms - now_ms % size
        base = self.fake.open_interest(coin)
        price = self.fake.price(coin)
        out = []
        for i in range(limit - 1, -1, -1):
            amount = base * (1 + 0.001 * (i % 7))
            out.append(
                {
                    "symbol": f"{coin}{self.fake.quote}",
                    "sumOpenInterest": _num(amount),
                    "sumOpenInterestValue": _num(amount * price),
                    "timestamp": str(last - i * size),
                }
            )
        return 200, out

    def funding_history(self, query: Mapping[str, str]) -> Any:
        coin = self.coin_of(query.get("symbol"))
        if coin is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        period = 8 * 3_600_000
        now_ms = self.fake.clock_ms()
        end = min(int(query.get("endTime", now_ms)), now_ms)
        start = int(query.get("startTime", end - 100 * period))
        limit = min(int(query.get("limit", 100)), 1000)
        first = start + (-start) % period
        times = list(range(first, end + 1, period))[:limit]
        return 200, [
            {
                "symbol": f"{coin}{self.fake.quote}",
                "fundingTime": t,
                "fundingRate": _num(self.fake.funding_rate(coin)),
                "markPrice": _num(self.fake.price(coin)),
            }
            for t in times
        ]

    def route(self, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
        routes = {
            "/fapi/v1/exchangeInfo": lambda: (200, self.exchange_info()),
            "/fapi/v1/time": lambda: (200, {"serverTime": self.fake.clock_ms()}),
            "/fapi/v1/ping": lambda: (200, {}),
            "/fapi/v1/klines": lambda: self.klines(query),
            "/fapi/v1/ticker/24hr": lambda: self.ticker(query),
            "/fapi/v1/premiumIndex": lambda: self.premium_index(query),
            "/fapi/v1/openInterest": lambda: self.open_interest(query),
            "/fapi/v1/fundingRate": lambda: self.funding_history(query),
            "/futures/data/openInterestHist": lambda: self.open_interest_history(query),
        }
        handler = routes.get(path)
        if handler is None:
            return 404, {"code": -5000, "msg": f"Path {path} not found"}
        status, payload = handler()
        return int(status), payload


class _Hyperliquid:
    """Payloads of Hyperliquid's POST /info, as ccxt's hyperliquid parses them."""

    def __init__(self, fake: FakeExchange) -> None:
        self.fake = fake

    def universe(self) -> list[dict[str, Any]]:
        return [
            {
                "szDecimals": _HL_SZ_DECIMALS.get(coin, 2),
                "name": coin,
                "maxLeverage": 40,
                "marginTableId": 56,
            }
            for coin in self.fake.coins
        ]

    def asset_contexts(self) -> list[dict[str, Any]]:
        out = []
        for coin in self.fake.coins:
            price = self.fake.price(coin)
            out.append(
                {
                    "funding": _num(self.fake.funding_rate(coin)),
                    "openInterest": _num(self.fake.open_interest(coin)),
                    "prevDayPx": _num(price),
                    "dayNtlVlm": "1000000.0",
                    "premium": "0.0",
                    "oraclePx": _num(price),
                    "markPx": _num(price),
                    "midPx": _num(price),
                    "impactPxs": [_num(price), _num(price)],
                    "dayBaseVlm": "1000.0",
                }
            )
        return out

    def candles(self, req: Mapping[str, Any]) -> tuple[int, Any]:
        coin = str(req.get("coin", ""))
        if coin not in self.fake.coins:
            return 500, None
        interval = str(req.get("interval", "1m"))
        size = timeframe_ms(interval)
        times, rows = self.fake.candles_at(coin, interval)
        start = int(req.get("startTime", 0))
        end = int(req.get("endTime", self.fake.clock_ms()))
        lo = int(np.searchsorted(times, start, side="left"))
        hi = int(np.searchsorted(times, end, side="right"))
        lo = max(lo, hi - 5000)  # Hyperliquid serves at most 5000 candles per request
        return 200, [
            {
                "t": int(times[i]),
                "T": int(times[i]) + size - 1,
                "s": coin,
                "i": interval,
                "o": _num(rows[i, 0]),
                "c": _num(rows[i, 3]),
                "h": _num(rows[i, 1]),
                "l": _num(rows[i, 2]),
                "v": _num(rows[i, 4]),
                "n": 100,
            }
            for i in range(lo, hi)
        ]

    def funding_history(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        coin = str(body.get("coin", ""))
        now_ms = self.fake.clock_ms()
        start = int(body.get("startTime", now_ms - 86_400_000))
        end = min(int(body.get("endTime", now_ms)), now_ms)
        first = start + (-start) % 3_600_000
        return 200, [
            {
                "coin": coin,
                "fundingRate": _num(self.fake.funding_rate(coin)),
                "premium": "0.0",
                "time": t,
            }
            for t in range(first, end + 1, 3_600_000)
        ][:500]

    def route(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        kind = body.get("type")
        if kind == "meta":
            return 200, {"universe": self.universe(), "marginTables": []}
        if kind == "metaAndAssetCtxs":
            return 200, [{"universe": self.universe(), "marginTables": []}, self.asset_contexts()]
        if kind == "candleSnapshot":
            return self.candles(body.get("req", {}))
        if kind == "fundingHistory":
            return self.funding_history(body)
        if kind == "allMids":
            return 200, {coin: _num(self.fake.price(coin)) for coin in self.fake.coins}
        if kind == "spotMeta":
            return 200, {"universe": [], "tokens": []}
        if kind == "spotMetaAndAssetCtxs":
            return 200, [{"universe": [], "tokens": []}, []]
        if kind == "perpDexs":
            return 200, [None]
        return 422, None


def _handler_class(fake: FakeExchange) -> type[BaseHTTPRequestHandler]:
    binance = _Binance(fake)
    hyperliquid = _Hyperliquid(fake)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _handle(self, method: str) -> None:
            with fake._lock:
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                fake._pass_gate()
                self._answer(method)
            finally:
                with fake._lock:
                    fake.in_flight -= 1

        def _answer(self, method: str) -> None:
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            body: dict[str, Any] | None = None
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                raw = self.rfile.read(length)
                try:
                    parsed = json.loads(raw)
                    body = parsed if isinstance(parsed, dict) else None
                except ValueError:
                    body = None
            request = RecordedRequest(method, split.path, query, body, time.monotonic())
            verdict = fake._record(request)
            fake._wait(fake.latency_s)
            if verdict == "dropped":
                self._send(404, b'{"code":-5000,"msg":"not found"}')
                return
            if isinstance(verdict, _Failure):
                self._fail(verdict.mode)
                return
            if isinstance(verdict, tuple):
                self._send(verdict[0], json.dumps(verdict[1]).encode())
                return
            if split.path == "/info" and method == "POST":
                status, payload = hyperliquid.route(body or {})
            else:
                status, payload = binance.route(split.path, query)
            self._send(status, json.dumps(payload).encode())

        def _fail(self, mode: FailureMode) -> None:
            if mode == "429":
                self._send(429, b'{"code":-1003,"msg":"Too many requests."}', {"Retry-After": "1"})
            elif mode == "500":
                self._send(500, b'{"code":-1000,"msg":"An unknown error occured."}')
            elif mode == "404":
                self._send(404, b'{"code":-5000,"msg":"not found"}')
            elif mode == "timeout":
                fake._hold(fake.timeout_s)
                self._send(504, b"{}")
            elif mode == "malformed":
                self._send(200, b'[[1700000000000, "1.0", "2.0"')
            elif mode == "empty":
                self._send(200, b"[]")

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    return Handler


def main() -> None:
    """Run the fake exchange until interrupted; print its URL first."""
    parser = argparse.ArgumentParser(description="Fake Binance USD-M / Hyperliquid market data.")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--days", type=int, default=44, help="days of synthetic 1m candles")
    args = parser.parse_args()
    now = datetime.now(UTC)
    candles = synthetic_candles(start=now - timedelta(days=args.days), end=now + timedelta(days=1))
    fake = FakeExchange(candles, latency_s=args.latency_ms / 1000).start()
    print(fake.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
