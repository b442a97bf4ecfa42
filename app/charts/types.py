"""`ChartImage`: one rendered chart, as a request and the records carry it (a domain value)."""

from __future__ import annotations

from app.domain import ChartImage

__all__ = ["ChartImage"]
