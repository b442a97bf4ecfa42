"""The candle cache: closed exchange candles in the `candle` table, so nothing is fetched twice.

Only closed candles are stored (a forming candle would change), keyed by exchange id, unified
symbol, timeframe and open time in integer milliseconds. Saving the same candle again replaces it.
`CandleCache` is the `CandleStore` port the exchange feed is handed; `load_cached_candles` reads a
whole source back for `arena backtest --data cache:EXCHANGE`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Table, and_, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.expression import Executable

from app.db.models import Candle
from app.domain import (
    CANDLE_COLUMNS,
    candles_from_rows,
    empty_candles,
    ensure_utc,
    index_ns,
    timeframe_to_timedelta,
)
from app.errors import ConfigError, TemporaryError

_BATCH_ROWS = 2000


def _ms(moment: datetime) -> int:
    return int(ensure_utc(moment).timestamp() * 1000)


class CandleCache:
    """Read and write closed candles in the `candle` table of a migrated database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(
        self, *, exchange: str, symbol: str, timeframe: str, start: datetime, end: datetime
    ) -> pd.DataFrame:
        """Return the cached candles with open time in [`start`, `end`), oldest first."""
        query = (
            select(
                Candle.open_time_ms,
                Candle.open,
                Candle.high,
                Candle.low,
                Candle.close,
                Candle.volume,
            )
            .where(
                and_(
                    Candle.exchange == exchange,
                    Candle.symbol == symbol,
                    Candle.timeframe == timeframe,
                    Candle.open_time_ms >= _ms(start),
                    Candle.open_time_ms < _ms(end),
                )
            )
            .order_by(Candle.open_time_ms)
        )
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(query).all()
        except SQLAlchemyError as error:
            raise TemporaryError(f"the candle cache could not be read: {error}") from error
        if not rows:
            return empty_candles()
        table = np.array(rows, dtype=float)
        return candles_from_rows(table[:, 0].astype(np.int64), table[:, 1:])

    def count(self, *, exchange: str, symbol: str, timeframe: str) -> int:
        """Return how many candles of this series are cached."""
        query = select(func.count()).where(
            Candle.exchange == exchange, Candle.symbol == symbol, Candle.timeframe == timeframe
        )
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def latest_closes(
        self, *, exchange: str, coins: Sequence[str]
    ) -> dict[str, tuple[float, datetime]]:
        """Return each coin's last cached close and when its candle closed (any timeframe)."""
        wanted = {coin.upper() for coin in coins}
        found: dict[str, tuple[float, datetime]] = {}
        query = (
            select(Candle.symbol, Candle.timeframe, func.max(Candle.open_time_ms))
            .where(Candle.exchange == exchange)
            .group_by(Candle.symbol, Candle.timeframe)
        )
        with self.engine.connect() as connection:
            for symbol, timeframe, open_ms in connection.execute(query).all():
                coin = coin_of(symbol)
                if coin not in wanted:
                    continue
                closed_at = datetime.fromtimestamp(open_ms / 1000, UTC) + timeframe_to_timedelta(
                    timeframe
                )
                if coin in found and found[coin][1] >= closed_at:
                    continue
                close = connection.execute(
                    select(Candle.close).where(
                        Candle.exchange == exchange,
                        Candle.symbol == symbol,
                        Candle.timeframe == timeframe,
                        Candle.open_time_ms == open_ms,
                    )
                ).scalar_one()
                found[coin] = (float(close), closed_at)
        return found

    def save(self, *, exchange: str, symbol: str, timeframe: str, frame: pd.DataFrame) -> int:
        """Store closed candles (replacing any with the same open time); return how many."""
        if frame.empty:
            return 0
        times = index_ns(frame) // 1_000_000
        values = frame[list(CANDLE_COLUMNS)].to_numpy(dtype=float)
        rows = [
            {
                "exchange": exchange,
                "symbol": symbol,
                "timeframe": timeframe,
                "open_time_ms": int(t),
                "open": float(v[0]),
                "high": float(v[1]),
                "low": float(v[2]),
                "close": float(v[3]),
                "volume": float(v[4]),
            }
            for t, v in zip(times, values, strict=True)
        ]
        try:
            with self.engine.begin() as connection:
                for batch in _batches(rows):
                    connection.execute(self._upsert(), batch)
        except SQLAlchemyError as error:
            raise TemporaryError(f"the candle cache could not be written: {error}") from error
        return len(rows)

    def _upsert(self) -> Executable:
        dialect = self.engine.dialect.name
        table = Candle.__table__
        assert isinstance(table, Table)
        keys = ["exchange", "symbol", "timeframe", "open_time_ms"]
        if dialect == "sqlite":
            lite = sqlite.insert(table)
            return lite.on_conflict_do_update(
                index_elements=keys, set_={name: lite.excluded[name] for name in CANDLE_COLUMNS}
            )
        if dialect == "postgresql":
            pg = postgresql.insert(table)
            return pg.on_conflict_do_update(
                index_elements=keys, set_={name: pg.excluded[name] for name in CANDLE_COLUMNS}
            )
        raise TemporaryError(f"the candle cache does not support {dialect} databases yet")


def _batches(rows: list[dict[str, object]]) -> Iterator[list[dict[str, object]]]:
    for start in range(0, len(rows), _BATCH_ROWS):
        yield rows[start : start + _BATCH_ROWS]


def coin_of(symbol: str) -> str:
    """Return the coin of a unified symbol: `BTC/USDT:USDT` -> `BTC`."""
    return symbol.split("/")[0].split(":")[0].upper()


def load_cached_candles(
    engine: Engine,
    exchange: str,
    *,
    coins: Sequence[str] | None = None,
    timeframe: str | None = None,
) -> tuple[dict[str, pd.DataFrame], str]:
    """Return the candles cached for `exchange` per coin, and their timeframe (the finest held,
    or `timeframe` when given).

    Raise `ConfigError` naming what is cached when nothing usable is: the fix is a download.
    """
    query = (
        select(Candle.symbol, Candle.timeframe, func.count())
        .where(Candle.exchange == exchange)
        .group_by(Candle.symbol, Candle.timeframe)
    )
    with engine.connect() as connection:
        series = connection.execute(query).all()
    wanted = {coin.upper() for coin in coins} if coins else None
    finest: dict[str, tuple[str, str]] = {}
    for symbol, held, _count in series:
        coin = coin_of(symbol)
        if (wanted is not None and coin not in wanted) or timeframe not in (None, held):
            continue
        finer = coin in finest and timeframe_to_timedelta(held) < timeframe_to_timedelta(
            finest[coin][1]
        )
        if coin not in finest or finer:
            finest[coin] = (symbol, held)
    hint = (
        f"download some first: arena data download --exchange {exchange} "
        "--symbols BTC,ETH --timeframe 5m --since 2025-10-01 --until 2025-11-01"
    )
    if not finest:
        with engine.connect() as connection:
            sources = sorted(connection.scalars(select(Candle.exchange).distinct()))
        held = f" (it holds: {', '.join('cache:' + s for s in sources)})" if sources else ""
        raise ConfigError(f"the candle cache holds no {exchange} candles{held}; {hint}")
    if wanted is not None and wanted - set(finest):
        raise ConfigError(
            f"the candle cache holds no {exchange} candles for "
            f"{', '.join(sorted(wanted - set(finest)))}; {hint}"
        )
    timeframes = {held for _, held in finest.values()}
    if len(timeframes) != 1:
        raise ConfigError(
            f"the cached {exchange} candles mix timeframes ({', '.join(sorted(timeframes))}); "
            "download one timeframe for every coin, or pass --symbols to pick coins"
        )
    chosen = timeframes.pop()
    cache = CandleCache(engine)
    far_past, far_future = datetime(1970, 1, 2, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    candles = {
        coin: cache.load(
            exchange=exchange, symbol=symbol, timeframe=chosen, start=far_past, end=far_future
        )
        for coin, (symbol, _) in sorted(finest.items())
    }
    return candles, chosen
