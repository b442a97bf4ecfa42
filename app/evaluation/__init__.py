"""Evaluation over many windows: which windows, the statistics over them, and the report.

`windows` and `stats` are pure (numpy only); `report` turns per-window results into the JSON
object, the Markdown summary and the charts; `window_run` runs one window with the backtest code.
"""
