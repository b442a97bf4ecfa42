"""The `arena` command line (also `python -m app`). Thin: commands build through `app.wiring`.

`root` holds the typer app, the root options and `main`'s exit codes; `run`, `backtest`,
`reports`, `quota`, `data`, `db` and `config` hold one command group each; `views` renders tables
and shapes `--json` documents; `progress` draws the progress bars; `options` holds the option types
and value parsers several commands share.
"""

from app.cli.console import stderr, stdout
from app.cli.root import app, main

__all__ = ["app", "main", "stderr", "stdout"]
