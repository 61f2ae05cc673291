"""A tiny ledger: parse ``date,category,amount`` lines and report totals."""

from ledger.parse import Entry, parse_amount, parse_ledger
from ledger.report import format_cents, render_report, totals_by_category

__all__ = [
    "Entry",
    "parse_amount",
    "parse_ledger",
    "format_cents",
    "render_report",
    "totals_by_category",
]
