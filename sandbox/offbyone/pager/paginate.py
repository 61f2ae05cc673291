"""Compute page counts and page slices for a sequence of items.

Pages are numbered from 1. An empty sequence has zero pages.
"""


def page_count(total: int, per_page: int) -> int:
    """Return how many pages are needed to show ``total`` items."""
    if per_page <= 0:
        raise ValueError("per_page must be positive")
    if total < 0:
        raise ValueError("total must not be negative")
    return total // per_page + 1 if total else 0


def page_bounds(page: int, total: int, per_page: int) -> tuple[int, int]:
    """Return the ``(start, stop)`` slice indices for a 1-based ``page``.

    Raises ``IndexError`` when ``page`` is outside ``1..page_count()``.
    """
    pages = page_count(total, per_page)
    if page < 1 or page > pages:
        raise IndexError(f"page {page} out of range 1..{pages}")
    start = (page - 1) * per_page
    stop = min(start + per_page, total)
    return start, stop


def get_page(items: list, page: int, per_page: int) -> list:
    """Return the items shown on ``page`` (1-based)."""
    start, stop = page_bounds(page, len(items), per_page)
    return items[start:stop]
