"""Trading core: risk checks, the paper perpetuals exchange and the cycle engine."""
