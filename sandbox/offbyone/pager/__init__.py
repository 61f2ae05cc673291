"""Pagination helpers for slicing sequences into fixed-size pages."""

from pager.paginate import page_count, page_bounds, get_page

__all__ = ["page_count", "page_bounds", "get_page"]
