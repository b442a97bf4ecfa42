"""Market-data adapters: historical candle files, the ccxt feed and the candle cache.

`load_candles` and friends are cheap to import; `CcxtMarketData` (which pulls in ccxt) and
`CandleCache` (SQLAlchemy) are imported from their modules, `app.market.ccxt_feed` and
`app.market.candle_cache`, by the code that needs them.
"""

from app.domain import CANDLE_COLUMNS
from app.market.dataset import DataSet, expand_paths, load_data_set
from app.market.files import (
    DataFileInfo,
    describe_data_file,
    find_gaps,
    infer_timeframe,
    is_data_file,
    load_candles,
    load_funding,
    load_mark_candles,
    timedelta_to_timeframe,
)
from app.market.historical import HistoricalMarketData
from app.market.resample import resample_candles

__all__ = [
    "CANDLE_COLUMNS",
    "DataFileInfo",
    "DataSet",
    "HistoricalMarketData",
    "describe_data_file",
    "expand_paths",
    "find_gaps",
    "infer_timeframe",
    "is_data_file",
    "load_candles",
    "load_data_set",
    "load_funding",
    "load_mark_candles",
    "resample_candles",
    "timedelta_to_timeframe",
]
