"""Technical indicators (EMA, MACD, RSI, ATR, volume vs average): pure pandas, vectorised."""
