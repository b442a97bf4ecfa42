"""Market-data adapters: the ccxt feed, historical candle files and the candle cache."""
