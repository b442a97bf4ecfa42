"""One decision cycle, shared by the daemon and the backtests."""
