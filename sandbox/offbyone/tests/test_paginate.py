"""Tests for pager.paginate."""

import pytest

from pager import get_page, page_bounds, page_count


def test_empty_has_no_pages():
    assert page_count(0, 10) == 0


def test_partial_last_page_counts():
    assert page_count(25, 10) == 3


def test_exact_multiple_page_count():
    assert page_count(20, 10) == 2


def test_first_page_bounds():
    assert page_bounds(1, 25, 10) == (0, 10)


def test_last_partial_page_items():
    items = list(range(25))
    assert get_page(items, 3, 10) == [20, 21, 22, 23, 24]


def test_page_past_end_raises():
    with pytest.raises(IndexError):
        get_page(list(range(20)), 3, 10)


def test_invalid_per_page_rejected():
    with pytest.raises(ValueError):
        page_count(5, 0)
