"""Summarise parsed ledger entries as per-category totals."""

from ledger.parse import Entry


def format_cents(cents: int) -> str:
    """Format integer cents as money, e.g. ``1250 -> "12.50"``, ``-5 -> "-0.05"``."""
    dollars, rest = divmod(cents, 100)
    return f"{dollars}.{rest:02d}"


def totals_by_category(entries: list[Entry]) -> dict[str, int]:
    """Sum the cents of each category, keeping first-seen category order."""
    totals: dict[str, int] = {}
    for entry in entries:
        totals[entry.category] = totals.get(entry.category, 0) + entry.cents
    return totals


def render_report(entries: list[Entry]) -> str:
    """Render one ``category: amount`` line per category plus a total line."""
    totals = totals_by_category(entries)
    lines = [f"{name}: {format_cents(cents)}" for name, cents in totals.items()]
    lines.append(f"TOTAL: {format_cents(sum(totals.values()))}")
    return "\n".join(lines)
