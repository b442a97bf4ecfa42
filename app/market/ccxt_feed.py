"""`CcxtMarketData`: the `MarketData` port on a live exchange, through `ccxt.async_support`.

One snapshot issues every request for every coin at once (asyncio.gather): intraday and context
candles, the ticker, the funding rate, open interest and its recent history, whichever the
exchange offers (`exchange.has`). What it does not offer is reported in `CoinSnapshot.missing`
so the prompt says "not available" instead of showing a made-up zero; an optional request that
fails after its retries is reported the same way, while failing candles fail the snapshot.

ccxt's rate limiter is kept on, with a burst allowance so one snapshot's requests are not
serialised at `rateLimit` ms apart (see `DEFAULT_BURST_TOKENS`). Network errors, timeouts and
rate limits are retried with exponential backoff; whatever still fails is translated into
`app.errors` types (`raise ... from e`). Closed candles are kept in memory and, with a
`CandleStore` (the `candle` table), so a cycle fetches only the candles closed since the last
one and a restart fetches nothing it already has.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import ccxt.async_support as ccxt_async
import numpy as np
import pandas as pd
from ccxt.base import errors as ccxt_errors

from app.candle_checks import DEFAULT_MAX_MOVE_PCT, NEIGHBOURS, check_candles
from app.domain import (
    CoinSnapshot,
    MarketRules,
    MarketSnapshot,
    candles_from_rows,
    empty_candles,
    ensure_utc,
    index_ns,
    timeframe_to_timedelta,
)
from app.errors import (
    AppError,
    ConfigError,
    DataUnavailableError,
    RateLimitedError,
    TemporaryError,
)
from app.indicators import add_context_indicators, add_intraday_indicators
from app.market.resample import step_ns
from app.market.symbols import default_quote, market_rules, resolve_symbols
from app.market.throttle import TokenBucket
from app.ports import CandleStore

log = logging.getLogger(__name__)

# Rate-limit tokens a burst may spend at once. ccxt refills one token per `rateLimit` ms (50 ms
# on Binance USD-M and Hyperliquid: 1200 a minute) and by default holds one, which serialises a
# snapshot's ~36 requests (48 tokens on Binance USD-M). 100 tokens let a snapshot go out at once
# while no minute exceeds 1300 tokens: under Binance USD-M's 2400 weight a minute; a 3-minute
# cycle on Hyperliquid spends about a third of its 1200 a minute.
DEFAULT_BURST_TOKENS: Final = 100.0
# Open interest "average" in the prompt: the mean of the last 30 five-minute points (2.5 h).
OI_HISTORY_TIMEFRAME: Final = "5m"
OI_HISTORY_POINTS: Final = 30
DEFAULT_PAGE_LIMIT: Final = 500
# A candle is only remembered (in memory or in the cache) once it closed this long before the
# snapshot time: if the exchange's clock lags ours, the newest candle could still be forming.
SETTLE_GRACE_MS: Final = 10_000
# On these exchanges the per-symbol ticker/funding/open-interest methods each make the same bulk
# request, so one bulk call per snapshot replaces six.
_BULK_BACKED: Final = frozenset({"hyperliquid"})
# A snapshot older than this (or two intraday candles) is of the past, not of "now".
_PAST_TOLERANCE: Final = timedelta(minutes=2)
# The longest pause between two attempts to load the markets at start.
_STARTUP_PAUSE_MAX_S: Final = 60.0
_SCHEME_AND_HOST: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/]+")

Mode = Literal["single", "bulk", "none"]


def cache_source(exchange_id: str, *, sandbox: bool = False, api_url: str | None = None) -> str:
    """Return the candle cache's name for where candles come from.

    The exchange id for the exchange itself; with a sandbox or a replaced API host, the id plus
    that difference (`binanceusdm@sandbox`, `binanceusdm@127.0.0.1:8080`), so a testnet's or a
    mirror's candles are never served as the real exchange's.
    """
    source = exchange_id
    if sandbox:
        source += "@sandbox"
    if api_url:
        source += "@" + api_url.split("://", 1)[-1].rstrip("/")
    return source


def replace_api_host(urls: Any, api_url: str) -> Any:
    """Return `urls` (ccxt's `urls['api']`: a string or nested dicts) with every REST URL's scheme
    and host replaced by `api_url`, keeping the paths."""
    base = api_url.rstrip("/")
    if isinstance(urls, str):
        return (
            _SCHEME_AND_HOST.sub(base, urls) if urls.startswith(("http://", "https://")) else urls
        )
    if isinstance(urls, Mapping):
        return {key: replace_api_host(value, api_url) for key, value in urls.items()}
    if isinstance(urls, list):
        return [replace_api_host(value, api_url) for value in urls]
    return urls


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_exchange(
    exchange_id: str,
    *,
    api_url: str | None = None,
    sandbox: bool = False,
    timeout_s: float = 10.0,
    burst_tokens: float | None = DEFAULT_BURST_TOKENS,
    config: Mapping[str, Any] | None = None,
) -> Any:
    """Create the ccxt async exchange: rate limit on, sandbox and API URL applied."""
    if exchange_id not in ccxt_async.exchanges:
        close = difflib.get_close_matches(exchange_id, ccxt_async.exchanges, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see ccxt's list of exchanges"
        raise ConfigError(f"EXCHANGE_ID {exchange_id!r} is not a ccxt exchange; {hint}")
    settings: dict[str, Any] = {"enableRateLimit": True, "timeout": int(timeout_s * 1000)}
    if exchange_id == "hyperliquid":
        # Perpetuals only: loading spot and builder-deployed markets costs two more requests.
        settings["options"] = {"fetchMarkets": {"types": ["swap"]}}
    exchange = getattr(ccxt_async, exchange_id)(_deep_merge(settings, config or {}))
    if sandbox:
        no_sandbox = ConfigError(
            f"{exchange_id} has no sandbox in ccxt; set EXCHANGE_SANDBOX=false "
            "(or point EXCHANGE_API_URL at a test server)"
        )
        # ccxt keeps a `test` entry (None) for exchanges without one and would switch to it.
        if not exchange.urls.get("test"):
            raise no_sandbox
        try:
            exchange.set_sandbox_mode(True)
        except ccxt_errors.NotSupported as error:
            raise no_sandbox from error
    if api_url:
        exchange.urls["api"] = replace_api_host(exchange.urls["api"], api_url)
    _refuse_unparsed_bodies(exchange)
    _share_identical_requests(exchange)
    if burst_tokens and float(exchange.rateLimit or 0) > 0:
        bucket = TokenBucket(capacity=burst_tokens, refill_per_s=1000.0 / float(exchange.rateLimit))
        # fetch2 awaits `self.throttle(cost)` for every request: same costs, our bucket.
        exchange.throttle = bucket.acquire
    return exchange


def _refuse_unparsed_bodies(exchange: Any) -> None:
    """Make a body that is not valid JSON raise `BadResponse` instead of reaching the parsers.

    ccxt hands a truncated JSON body (or a proxy's HTML page) to the parsers as a plain string,
    which they iterate character by character into empty or nonsensical results.
    """
    fetch = exchange.fetch

    async def strict_fetch(
        url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        response = await fetch(url, method, headers, body)
        if isinstance(response, str) and response.lstrip()[:1] in ("{", "[", "<"):
            raise ccxt_errors.BadResponse(
                f"{exchange.id} {method} {url}: the body is not valid JSON: {response[:120]!r}"
            )
        return response

    exchange.fetch = strict_fetch


def _share_identical_requests(exchange: Any) -> None:
    """Make identical requests in flight at once share one answer.

    On Hyperliquid, ccxt's tickers, funding rates and open interest each post the same
    `metaAndAssetCtxs` request; a snapshot asks all three at once, so they go out once. Only
    requests under way together are shared: nothing is cached once answered.
    """
    fetch = exchange.fetch
    in_flight: dict[tuple[str, str, str], asyncio.Future[Any]] = {}

    async def shared_fetch(
        url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        key = (method, url, body if isinstance(body, str) else repr(body))
        pending = in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        task = asyncio.ensure_future(fetch(url, method, headers, body))
        in_flight[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if in_flight.get(key) is task:
                del in_flight[key]

    exchange.fetch = shared_fetch


def translate_error(error: Exception, *, exchange_id: str, what: str) -> AppError:
    """Map a ccxt exception to the `app.errors` type that says what the loop should do next."""
    detail = str(error)
    if len(detail) > 300:
        detail = detail[:300] + "..."
    where = f"{exchange_id} {what}"
    if isinstance(error, ccxt_errors.DDoSProtection | ccxt_errors.RateLimitExceeded):
        return RateLimitedError(f"{where}: rate limited by the exchange ({detail}); retry later")
    if isinstance(error, ccxt_errors.RequestTimeout):
        return TemporaryError(f"{where}: no answer in time ({detail})")
    if isinstance(error, ccxt_errors.NetworkError):
        return TemporaryError(f"{where}: exchange unreachable or failing ({detail})")
    if isinstance(error, ccxt_errors.AuthenticationError):
        return ConfigError(f"{where}: refused as unauthorised ({detail}); check the API settings")
    if isinstance(error, ccxt_errors.BadSymbol):
        return ConfigError(f"{where}: unknown market ({detail}); check SYMBOLS and EXCHANGE_QUOTE")
    if isinstance(error, ccxt_errors.NotSupported):
        return ConfigError(f"{where}: not supported by this exchange ({detail})")
    if isinstance(error, ccxt_errors.BadResponse):
        return TemporaryError(f"{where}: malformed answer ({detail})")
    return TemporaryError(f"{where}: {type(error).__name__}: {detail}")


def _ms(moment: datetime) -> int:
    return int(ensure_utc(moment).timestamp() * 1000)


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def ohlcv_arrays(rows: Any, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate ccxt OHLCV rows; return (open times ms, [open, high, low, close, volume] rows).

    Raises `TemporaryError` for anything but rows of six numbers with millisecond timestamps:
    ccxt turns a truncated body into rows of None rather than raising.
    """
    if not isinstance(rows, list):
        raise TemporaryError(f"{what}: malformed answer (expected a list of candles)")
    if not rows:
        return np.array([], dtype=np.int64), np.empty((0, 5))
    try:
        # numpy reads None as NaN and numeric strings as numbers; ragged rows raise ValueError.
        table = np.array([row[:6] for row in rows], dtype=float)
    except (TypeError, ValueError, IndexError) as error:
        raise TemporaryError(f"{what}: malformed candles ({error})") from error
    if table.ndim != 2 or table.shape[1] != 6 or np.isnan(table[:, :5]).any():
        raise TemporaryError(f"{what}: malformed candles (missing or non-numeric values)")
    if (table[:, 0] < 1e11).any():
        raise TemporaryError(f"{what}: malformed candles (timestamps are not milliseconds)")
    values = table[:, 1:]
    values[np.isnan(values[:, 4]), 4] = 0.0
    return table[:, 0].astype(np.int64), values


def _settlement(row: Any) -> tuple[int, float, float] | None:
    """Return (time ms, rate, mark price or NaN) of a ccxt funding-history entry, or None."""
    if not isinstance(row, Mapping):
        return None
    moment, rate = _float(row.get("timestamp")), _float(row.get("fundingRate"))
    if moment is None or rate is None:
        return None
    info = row.get("info")
    mark = _float(info.get("markPrice")) if isinstance(info, Mapping) else None
    return int(moment), rate, mark if mark is not None else math.nan


def settled(frame: pd.DataFrame, step_ms: int, before_ms: int) -> pd.DataFrame:
    """Return the candles of `frame` that closed at or before `before_ms`."""
    closes = index_ns(frame) // 1_000_000 + step_ms
    return frame if closes.size == 0 or closes[-1] <= before_ms else frame[closes <= before_ms]


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """What `download` did for one series: candles already cached, fetched, and now cached."""

    symbol: str
    timeframe: str
    cached_before: int
    fetched: int
    expected: int
    # The cache's name for the source: `arena backtest --data cache:<source>` replays it.
    source: str = ""


@dataclass
class _Extras:
    last_price: float | None = None
    mark_price: float | None = None
    funding_rate: float | None = None
    next_funding_at: datetime | None = None
    open_interest: float | None = None
    open_interest_avg: float | None = None


class CcxtMarketData:
    """Live market snapshots from any ccxt exchange (Hyperliquid by default).

    `coins` are base currencies (BTC, ETH...) resolved to the exchange's linear perpetuals
    settled in `quote` (USDC on Hyperliquid, USDT elsewhere). Each snapshot carries the last
    `tail` closed candles of both timeframes, with indicators computed over `history_candles`.
    """

    def __init__(
        self,
        *,
        coins: Sequence[str],
        exchange_id: str = "hyperliquid",
        api_url: str | None = None,
        sandbox: bool = False,
        quote: str | None = None,
        intraday_timeframe: str = "3m",
        context_timeframe: str = "4h",
        history_candles: int = 200,
        tail: int = 60,
        timeout_s: float = 10.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
        burst_tokens: float | None = DEFAULT_BURST_TOKENS,
        cache: CandleStore | None = None,
        open_interest_history: bool = True,
        exchange_config: Mapping[str, Any] | None = None,
        clock: Callable[[], datetime] | None = None,
        max_candle_move_pct: float = DEFAULT_MAX_MOVE_PCT,
        startup_retry_s: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not coins:
            raise ConfigError("no coins to fetch: set SYMBOLS, e.g. BTC,ETH")
        if tail < 1 or history_candles < tail:
            raise ConfigError(
                f"history_candles ({history_candles}) must be at least tail ({tail}), which is >= 1"
            )
        step_ns(intraday_timeframe)
        step_ns(context_timeframe)
        self.coins = tuple(coins)
        self.exchange_id = exchange_id
        self.quote = (quote or default_quote(exchange_id)).upper()
        self.intraday_timeframe = intraday_timeframe
        self.context_timeframe = context_timeframe
        self.history_candles = history_candles
        self.tail = tail
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.cache = cache
        # Testnet and mirror candles must never pass for the real exchange's in the cache.
        self.cache_source = cache_source(exchange_id, sandbox=sandbox, api_url=api_url)
        self.open_interest_history = open_interest_history
        # The exchange's "now", to tell a snapshot of the present from one of the past.
        self.clock = clock or (lambda: datetime.now(UTC))
        self.exchange = build_exchange(
            exchange_id,
            api_url=api_url,
            sandbox=sandbox,
            timeout_s=timeout_s,
            burst_tokens=burst_tokens,
            config=exchange_config,
        )
        self._symbols: dict[str, str] | None = None
        self._rules: dict[str, MarketRules] = {}
        self._markets_lock = asyncio.Lock()
        self._windows: dict[tuple[str, str], pd.DataFrame] = {}
        # Candles found implausible (app.candle_checks) and left out, since the feed started.
        self.max_candle_move_pct = max_candle_move_pct
        self.dropped_candles = 0
        # How long the first `load_markets` keeps trying an unreachable exchange.
        self.startup_retry_s = startup_retry_s
        self.sleep = sleep

    # Plumbing: retries, error translation, markets.

    async def _call(self, what: str, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        for attempt in range(self.max_retries + 1):
            try:
                return await method(*args)
            except ccxt_errors.NetworkError as error:
                # Timeouts, 429/418, 5xx, maintenance: worth another try after a pause.
                if attempt == self.max_retries:
                    raise translate_error(error, exchange_id=self.exchange_id, what=what) from error
                delay = self.retry_backoff_s * 2**attempt
                log.info("%s %s failed (%s); retry in %.2fs", self.exchange_id, what, error, delay)
                await asyncio.sleep(delay)
            except ccxt_errors.BaseError as error:
                raise translate_error(error, exchange_id=self.exchange_id, what=what) from error
            except (TypeError, KeyError, ValueError, IndexError, AttributeError) as error:
                # ccxt's parsers fail this way on payloads of the wrong shape.
                raise TemporaryError(
                    f"{self.exchange_id} {what}: malformed answer ({type(error).__name__}: {error})"
                ) from error
        raise AssertionError("unreachable")  # pragma: no cover

    async def _first_markets(self) -> Any:
        """Load the markets, trying an unreachable exchange again for `startup_retry_s` seconds.

        A daemon started while the exchange (or the network) is down waits for it instead of
        exiting; the pauses double from `retry_backoff_s` up to a minute.
        """
        waited_s = 0.0
        pause_s = max(self.retry_backoff_s, 0.5)
        while True:
            try:
                return await self._call("load_markets", self.exchange.load_markets)
            except TemporaryError as error:
                left_s = self.startup_retry_s - waited_s
                if left_s <= 0:
                    raise
                pause_s = min(pause_s, left_s)
                log.warning(
                    "%s: markets not loaded (%s); trying again in %.1f s (giving up after %g s)",
                    self.exchange_id,
                    error,
                    pause_s,
                    self.startup_retry_s,
                )
                await self.sleep(pause_s)
                waited_s += pause_s
                pause_s = min(pause_s * 2, _STARTUP_PAUSE_MAX_S)

    async def load_markets(self) -> dict[str, str]:
        """Load the exchange's markets once; return {coin: unified symbol}."""
        if self._symbols is not None:
            return self._symbols
        async with self._markets_lock:
            if self._symbols is None:
                markets = await self._first_markets()
                if not isinstance(markets, Mapping) or not markets:
                    raise DataUnavailableError(f"{self.exchange_id} returned no markets")
                symbols = resolve_symbols(
                    self.coins, markets, quote=self.quote, exchange_id=self.exchange_id
                )
                mode = int(self.exchange.precisionMode)
                self._rules = {
                    coin: market_rules(markets[symbol], mode) for coin, symbol in symbols.items()
                }
                self._symbols = symbols
        return self._symbols

    def _plausible(
        self, frame: pd.DataFrame, what: str, mark_price: float | None = None
    ) -> tuple[pd.DataFrame, str | None]:
        """Return `frame` without its implausible candles, and a note saying what was dropped."""
        checked = check_candles(frame, max_move_pct=self.max_candle_move_pct, mark_price=mark_price)
        if not checked.flagged:
            return frame, None
        self.dropped_candles += len(checked.flagged)
        note = checked.summary(f"{self.exchange_id} {what}")
        log.warning("%s", note)
        return checked.kept, note

    def _symbol(self, coin: str) -> str:
        assert self._symbols is not None
        if coin in self._symbols:
            return self._symbols[coin]
        if "/" in coin and coin in self.exchange.markets:
            return coin
        raise ConfigError(f"{coin} is not one of the configured coins ({', '.join(self.coins)})")

    def _mode(self, single: str, bulk: str) -> Mode:
        has = self.exchange.has
        native_single = has.get(single) is True
        if has.get(bulk) is True and (self.exchange_id in _BULK_BACKED or not native_single):
            return "bulk"
        if has.get(single):
            return "single"
        return "none"

    def _page_limit(self) -> int:
        features = getattr(self.exchange, "features", None) or {}
        found = ((features.get("swap") or {}).get("linear") or {}).get("fetchOHLCV") or {}
        limit = found.get("limit")
        return int(limit) if isinstance(limit, int) and limit > 0 else DEFAULT_PAGE_LIMIT

    # Candles.

    async def _fetch_range(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int,
        end_ms: int,
        progress: Callable[[int], None] | None = None,
    ) -> pd.DataFrame:
        """Fetch the candles opened in [start_ms, end_ms) and closed by end_ms, page by page."""
        step = step_ns(timeframe) // 1_000_000
        page = self._page_limit()
        what = f"fetch_ohlcv({symbol}, {timeframe})"
        times_parts: list[np.ndarray] = []
        value_parts: list[np.ndarray] = []
        since = start_ms
        while since + step <= end_ms:
            want = int(min(page, (end_ms - since) // step))
            rows = await self._call(
                what,
                self.exchange.fetch_ohlcv,
                symbol,
                timeframe,
                since,
                want,
                {"until": end_ms - 1},
            )
            times, values = ohlcv_arrays(rows, what=what)
            keep = (times >= since) & (times + step <= end_ms)
            if keep.any():
                times_parts.append(times[keep])
                value_parts.append(values[keep])
                if progress is not None:
                    progress(int(keep.sum()))
            if times.size == 0 or int(times.max()) + step <= since:
                break
            since = int(times.max()) + step
        if not times_parts:
            return empty_candles()
        frame = candles_from_rows(np.concatenate(times_parts), np.concatenate(value_parts))
        return frame[~frame.index.duplicated(keep="last")].sort_index()

    async def _cached_range(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int,
        end_ms: int,
        *,
        settled_before_ms: int,
        have: pd.DataFrame | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[pd.DataFrame, int]:
        """Return the closed candles in [start_ms, end_ms) from memory/cache plus what is missing
        from the exchange (from the first missing candle on); also how many were fetched.

        Candles closing after `settled_before_ms` are returned but not cached: with the
        exchange's clock a little behind ours, one of them could still be forming.
        """
        step = step_ns(timeframe) // 1_000_000
        if have is None and self.cache is not None:
            have = await asyncio.to_thread(
                self.cache.load,
                exchange=self.cache_source,
                symbol=symbol,
                timeframe=timeframe,
                start=_datetime(start_ms),
                end=_datetime(end_ms),
            )
        if have is None:
            have = empty_candles()
        have_ms = index_ns(have) // 1_000_000
        have = have[(have_ms >= start_ms) & (have_ms < end_ms)]
        grid = np.arange(start_ms, end_ms - step + 1, step, dtype=np.int64)
        present = np.isin(grid, index_ns(have) // 1_000_000)
        if progress is not None and present.any():
            progress(int(present.sum()))
        if present.all():
            return have, 0
        first_missing = int(grid[np.argmin(present)])
        fresh = await self._fetch_range(symbol, timeframe, first_missing, end_ms, progress)
        if self.cache is not None and not fresh.empty:
            await asyncio.to_thread(
                self.cache.save,
                exchange=self.cache_source,
                symbol=symbol,
                timeframe=timeframe,
                frame=settled(fresh, step, settled_before_ms),
            )
        if have.empty:
            return fresh, len(fresh)
        merged = pd.concat([have, fresh]).sort_index(kind="stable")
        return merged[~merged.index.duplicated(keep="last")], len(fresh)

    async def _closed_window(self, symbol: str, timeframe: str, at_ms: int) -> pd.DataFrame:
        """Return the last `history_candles` candles of `symbol` closed by `at_ms`."""
        step = step_ns(timeframe) // 1_000_000
        end_ms = at_ms - at_ms % step  # the newest closed candle closes here
        start_ms = end_ms - self.history_candles * step
        key = (symbol, timeframe)
        settled_before_ms = at_ms - SETTLE_GRACE_MS
        window, _ = await self._cached_range(
            symbol,
            timeframe,
            start_ms,
            end_ms,
            settled_before_ms=settled_before_ms,
            have=self._windows.get(key),
        )
        self._windows[key] = settled(window, step, settled_before_ms)
        if window.empty:
            raise DataUnavailableError(
                f"{self.exchange_id} has no closed {timeframe} candles of {symbol} "
                f"before {_datetime(at_ms)}"
            )
        newest_close_ms = int(index_ns(window)[-1] // 1_000_000) + step
        if newest_close_ms < end_ms - step:
            # The exchange brought nothing new: what was held is returned, and the engine's
            # freshness check (app.candle_checks) keeps the cycle from deciding on it.
            log.warning(
                "%s: no %s candle of %s since %s (the newest should close at %s)",
                self.exchange_id,
                timeframe,
                symbol,
                _datetime(newest_close_ms),
                _datetime(end_ms),
            )
        return window

    # Optional data: ticker, funding, open interest.

    async def _bulk(self, kind: str, method: Callable[..., Awaitable[Any]]) -> dict[str, Any]:
        assert self._symbols is not None
        result = await self._call(f"{kind}(all coins)", method, list(self._symbols.values()))
        return dict(result) if isinstance(result, Mapping) else {}

    async def current_prices(self) -> dict[str, float]:
        """Return each coin's last traded price now (for filling an answer that took a while)."""
        symbols = await self.load_markets()
        ex = self.exchange
        mode = self._mode("fetchTicker", "fetchTickers")
        tickers: dict[str, Any] = {}
        if mode == "bulk":
            tickers = await self._bulk("ticker", ex.fetch_tickers)
        elif mode == "single":
            found = await asyncio.gather(
                *(self._call(f"fetchTicker({s})", ex.fetch_ticker, s) for s in symbols.values())
            )
            tickers = dict(zip(symbols.values(), found, strict=True))
        prices = {}
        for coin, symbol in symbols.items():
            ticker = tickers.get(symbol)
            if isinstance(ticker, Mapping):
                price = _float(ticker.get("last")) or _float(ticker.get("close"))
                if price is not None and price > 0:
                    prices[coin] = price
        return prices

    async def _oi_average(self, symbol: str, at_ms: int) -> float | None:
        what = f"fetch_open_interest_history({symbol})"
        rows = await self._call(
            what,
            self.exchange.fetch_open_interest_history,
            symbol,
            OI_HISTORY_TIMEFRAME,
            None,
            OI_HISTORY_POINTS,
        )
        amounts = [
            _float(row.get("openInterestAmount"))
            for row in rows or []
            if isinstance(row, Mapping) and (_float(row.get("timestamp")) or 0) <= at_ms
        ]
        values = [a for a in amounts if a is not None]
        return float(np.mean(values)) if values else None

    def _optional_jobs(self, at_ms: int) -> dict[tuple[str, str], Awaitable[Any]]:
        assert self._symbols is not None
        ex = self.exchange
        jobs: dict[tuple[str, str], Awaitable[Any]] = {}
        plans: list[tuple[str, str, str, Callable[..., Awaitable[Any]], Callable[..., Any]]] = [
            ("ticker", "fetchTicker", "fetchTickers", ex.fetch_tickers, ex.fetch_ticker),
            (
                "funding",
                "fetchFundingRate",
                "fetchFundingRates",
                ex.fetch_funding_rates,
                ex.fetch_funding_rate,
            ),
            (
                "open_interest",
                "fetchOpenInterest",
                "fetchOpenInterests",
                ex.fetch_open_interests,
                ex.fetch_open_interest,
            ),
        ]
        for kind, single, bulk, bulk_method, single_method in plans:
            mode = self._mode(single, bulk)
            if mode == "bulk":
                jobs[("*", kind)] = self._bulk(kind, bulk_method)
            elif mode == "single":
                for coin, symbol in self._symbols.items():
                    jobs[(coin, kind)] = self._call(f"{single}({symbol})", single_method, symbol)
        if self.open_interest_history and ex.has.get("fetchOpenInterestHistory") is True:
            for coin, symbol in self._symbols.items():
                jobs[(coin, "open_interest_avg")] = self._oi_average(symbol, at_ms)
        return jobs

    def _extras(
        self, coin: str, symbol: str, results: Mapping[tuple[str, str], Any], at_ms: int
    ) -> tuple[_Extras, set[str]]:
        def pick(kind: str) -> Any:
            if (coin, kind) in results:
                return results[(coin, kind)]
            bulk = results.get(("*", kind))
            return bulk.get(symbol) if isinstance(bulk, Mapping) else None

        extras = _Extras()
        ticker = pick("ticker")
        if isinstance(ticker, Mapping):
            extras.last_price = _float(ticker.get("last")) or _float(ticker.get("close"))
            extras.mark_price = _float(ticker.get("markPrice"))
        funding = pick("funding")
        if isinstance(funding, Mapping):
            extras.funding_rate = _float(funding.get("fundingRate"))
            extras.mark_price = _float(funding.get("markPrice")) or extras.mark_price
            for key in ("fundingTimestamp", "nextFundingTimestamp"):
                moment = _float(funding.get(key))
                if moment is not None and moment > at_ms:
                    extras.next_funding_at = _datetime(int(moment))
                    break
        contract_size = self._rules[coin].contract_size if coin in self._rules else 1.0
        interest = pick("open_interest")
        if isinstance(interest, Mapping):
            amount = _float(interest.get("openInterestAmount"))
            if amount is not None:
                extras.open_interest = amount * contract_size
        average = results.get((coin, "open_interest_avg"))
        if isinstance(average, float):
            extras.open_interest_avg = average * contract_size
        missing = {
            name
            for name in (
                "funding_rate",
                "next_funding_at",
                "open_interest",
                "open_interest_avg",
                "mark_price",
            )
            if getattr(extras, name) is None
        }
        return extras, missing

    # The MarketData port.

    async def snapshot(self, at: datetime) -> MarketSnapshot:
        """Return every coin's closed candles and indicators, price, funding and OI at `at`."""
        at = ensure_utc(at)
        at_ms = _ms(at)
        symbols = await self.load_markets()
        candle_jobs: dict[tuple[str, str], Awaitable[pd.DataFrame]] = {}
        for coin, symbol in symbols.items():
            candle_jobs[(coin, "intraday")] = self._closed_window(
                symbol, self.intraday_timeframe, at_ms
            )
            candle_jobs[(coin, "context")] = self._closed_window(
                symbol, self.context_timeframe, at_ms
            )
        # Tickers, funding and open interest are "now" values: for a snapshot of a past time
        # they would leak the future into the prompt, so the close of the last candle stands in.
        horizon = max(_PAST_TOLERANCE, 2 * timeframe_to_timedelta(self.intraday_timeframe))
        past = at < self.clock() - horizon
        optional = {} if past else self._optional_jobs(at_ms)
        keys = [*candle_jobs, *optional]
        outcomes = await asyncio.gather(
            *candle_jobs.values(), *optional.values(), return_exceptions=True
        )
        results: dict[tuple[str, str], Any] = {}
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if key in candle_jobs or not isinstance(outcome, AppError):
                    raise outcome
                log.warning(
                    "%s: %s %s not available: %s", self.exchange_id, key[0], key[1], outcome
                )
                continue
            results[key] = outcome
        coins: dict[str, CoinSnapshot] = {}
        notes: list[str] = []
        for coin, symbol in symbols.items():
            extras, missing = self._extras(coin, symbol, results, at_ms)
            mark = extras.mark_price or extras.last_price
            checked: list[pd.DataFrame] = []
            for part, timeframe in (
                ("intraday", self.intraday_timeframe),
                ("context", self.context_timeframe),
            ):
                frame, note = self._plausible(results[(coin, part)], f"{coin} {timeframe}", mark)
                if note is not None:
                    notes.append(note)
                if frame.empty:
                    raise DataUnavailableError(
                        f"{self.exchange_id} has no plausible closed {timeframe} candles of "
                        f"{symbol} before {at}"
                    )
                checked.append(frame)
            intraday_raw, context_raw = checked
            last_price = extras.last_price or float(intraday_raw["close"].iloc[-1])
            coins[coin] = CoinSnapshot(
                coin=coin,
                symbol=symbol,
                last_price=last_price,
                intraday=add_intraday_indicators(intraday_raw).iloc[-self.tail :],
                context=add_context_indicators(context_raw).iloc[-self.tail :],
                funding_rate=extras.funding_rate,
                next_funding_at=extras.next_funding_at,
                open_interest=extras.open_interest,
                open_interest_avg=extras.open_interest_avg,
                mark_price=extras.mark_price,
                missing=frozenset(missing),
                rules=self._rules.get(coin),
            )
        return MarketSnapshot(
            at=at,
            intraday_timeframe=self.intraday_timeframe,
            context_timeframe=self.context_timeframe,
            coins=coins,
            notes=tuple(notes),
        )

    async def candles(
        self, coin: str, timeframe: str, start: datetime, end: datetime
    ) -> pd.DataFrame:
        """Return the plausible candles of `coin` opened at or after `start` and closed by `end`.

        The exit monitor reads these: an implausible candle (app.candle_checks) is left out, so it
        never triggers an exit. The candles just before `start` are read too (from the cache, as a
        rule), so the first ones have neighbours to be judged against.
        """
        await self.load_markets()
        symbol = self._symbol(coin)
        step = step_ns(timeframe) // 1_000_000
        start_ms = -(-_ms(start) // step) * step  # first candle boundary at or after start
        end_ms = _ms(end) - _ms(end) % step
        if end_ms <= start_ms:
            return empty_candles()
        frame, _ = await self._cached_range(
            symbol,
            timeframe,
            start_ms - NEIGHBOURS * step,
            end_ms,
            settled_before_ms=_ms(end) - SETTLE_GRACE_MS,
        )
        frame, _ = self._plausible(frame, f"{coin} {timeframe}")
        return frame[index_ns(frame) // 1_000_000 >= start_ms]

    async def funding(self, coin: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Return the settlements in (`start`, `end`]: `funding_rate` and `mark_price` (NaN where
        the exchange's history does not carry it, as on Hyperliquid)."""
        await self.load_markets()
        symbol = self._symbol(coin)
        if not self.exchange.has.get("fetchFundingRateHistory"):
            raise DataUnavailableError(
                f"{self.exchange_id} does not give funding-rate history, so funding cannot be "
                "settled from it"
            )
        start_ms, end_ms = _ms(start), _ms(end)
        found: dict[int, tuple[float, float]] = {}
        since = start_ms + 1
        while since <= end_ms:
            rows = await self._call(
                f"fetch_funding_rate_history({symbol})",
                self.exchange.fetch_funding_rate_history,
                symbol,
                since,
                None,
                {"until": end_ms},
            )
            page = [_settlement(row) for row in rows or []]
            fresh = [item for item in page if item is not None and since <= item[0] <= end_ms]
            if not fresh:
                break
            for settled_ms, rate, mark in fresh:
                # Settlements are stamped a few ms late on some venues; they belong to the second.
                found[settled_ms - settled_ms % 1000] = (rate, mark)
            since = max(item[0] for item in fresh) + 1
        times = sorted(found)
        index = pd.DatetimeIndex(
            pd.to_datetime(np.asarray(times, dtype=np.int64), unit="ms", utc=True),
            name="settled_at",
        ).as_unit("ns")
        return pd.DataFrame(
            {
                "funding_rate": [found[t][0] for t in times],
                "mark_price": [found[t][1] for t in times],
            },
            index=index,
            dtype=float,
        )

    async def market_rules(self) -> Mapping[str, MarketRules]:
        """Return precision and minimums per coin from the loaded markets."""
        await self.load_markets()
        return dict(self._rules)

    async def download(
        self,
        coin: str,
        timeframe: str,
        start: datetime,
        end: datetime,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> DownloadResult:
        """Fill the candle cache with `coin`'s closed candles in [`start`, `end`), paging as needed.

        `progress` is called with the number of candles found (cached or fetched) as it goes.
        """
        if self.cache is None:
            raise ConfigError("downloading candles needs a candle cache (a database)")
        symbols = await self.load_markets()
        symbol = symbols.get(coin) or self._symbol(coin)
        step = step_ns(timeframe) // 1_000_000
        start_ms = -(-_ms(start) // step) * step
        end_ms = _ms(end) - _ms(end) % step
        expected = max(0, (end_ms - start_ms) // step)
        before = await asyncio.to_thread(
            self.cache.load,
            exchange=self.cache_source,
            symbol=symbol,
            timeframe=timeframe,
            start=_datetime(start_ms),
            end=_datetime(end_ms),
        )
        # ccxt's clock (the machine's): the download has no snapshot time to go by.
        settled_before_ms = min(end_ms, int(self.exchange.milliseconds()) - SETTLE_GRACE_MS)
        _, fetched = await self._cached_range(
            symbol,
            timeframe,
            start_ms,
            end_ms,
            settled_before_ms=settled_before_ms,
            have=before,
            progress=progress,
        )
        return DownloadResult(
            symbol, timeframe, len(before), fetched, expected, source=self.cache_source
        )

    async def close(self) -> None:
        """Close the exchange's HTTP session."""
        await self.exchange.close()
