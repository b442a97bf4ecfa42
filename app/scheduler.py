"""The daemon: APScheduler jobs for decision cycles and the exit monitor."""
