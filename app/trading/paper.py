"""The simulated isolated-margin perpetuals account (DESIGN.md §4)."""
