"""Reports of violation rates: terminal tables, CSV/Parquet, Markdown, HTML with plots, and run timelines."""

from __future__ import annotations

from testbed.report._calibration import (
    CALIBRATION_COLUMNS,
    calibration_cells,
    calibration_html,
    calibration_legend,
    calibration_rich,
    proportion_text,
)
from testbed.report._files import (
    CSV_FIELDS,
    CSV_FILE,
    HTML_FILE,
    MARKDOWN_FILE,
    PARQUET_FILE,
    PLOTS_DIR,
    ReportFiles,
    write_report,
)
from testbed.report._terminal import render_terminal, report_console, task_line
from testbed.report._timeline import find_run, render_run, show_run

__all__ = [
    "CALIBRATION_COLUMNS",
    "CSV_FIELDS",
    "CSV_FILE",
    "HTML_FILE",
    "MARKDOWN_FILE",
    "PARQUET_FILE",
    "PLOTS_DIR",
    "ReportFiles",
    "calibration_cells",
    "calibration_html",
    "calibration_legend",
    "calibration_rich",
    "find_run",
    "proportion_text",
    "render_run",
    "render_terminal",
    "report_console",
    "show_run",
    "task_line",
    "write_report",
]
