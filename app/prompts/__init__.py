"""Versioned prompts: the trading rules and the per-cycle market and account state."""
