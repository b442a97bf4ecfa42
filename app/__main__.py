"""`python -m app` runs the `arena` command line."""

import sys

from app.early_stop import hold_stop_signals

# First thing: a SIGTERM from now on is remembered, never a kill (see app/early_stop.py).
hold_stop_signals(sys.argv[1:])

from app.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
