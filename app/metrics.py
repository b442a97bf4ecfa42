"""Performance metrics from an account-value series and closed trades."""
