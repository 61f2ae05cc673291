"""Parse ledger text into entries with amounts stored as integer cents."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One ledger line: an ISO date, a category and an amount in cents."""

    date: str
    category: str
    cents: int


def parse_amount(text: str) -> int:
    """Convert a decimal amount such as ``"-12.50"`` or ``"1,200"`` to cents."""
    text = text.strip().replace(",", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 2:
        raise ValueError(f"invalid amount: {text!r}")
    return sign * (int(whole) * 100 + int(frac or "0"))


def parse_ledger(text: str) -> list[Entry]:
    """Parse ``date,category,amount`` lines, skipping blanks and ``#`` comments."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        date, category, amount = (part.strip() for part in line.split(",", 2))
        entries.append(Entry(date, category, parse_amount(amount)))
    return entries
