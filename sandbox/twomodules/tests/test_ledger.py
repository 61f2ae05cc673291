"""Tests for the ledger parse and report modules."""

from ledger import format_cents, parse_amount, parse_ledger, render_report

SAMPLE = """\
# date, category, amount
2024-01-02, salary, 1,200.00
2024-01-03, coffee, -3.5
2024-01-04, rent, -1,250
2024-01-05, coffee, -2.75
"""


def test_parse_whole_and_two_decimals():
    assert parse_amount("12.50") == 1250
    assert parse_amount("1,200") == 120000


def test_parse_single_decimal_digit():
    assert parse_amount("3.5") == 350
    assert parse_amount("-0.1") == -10


def test_format_positive():
    assert format_cents(1250) == "12.50"
    assert format_cents(7) == "0.07"


def test_format_negative():
    assert format_cents(-5) == "-0.05"
    assert format_cents(-1250) == "-12.50"


def test_parse_ledger_skips_comments_and_blanks():
    entries = parse_ledger(SAMPLE + "\n# trailing comment\n")
    assert [e.category for e in entries] == ["salary", "coffee", "rent", "coffee"]


def test_render_report():
    report = render_report(parse_ledger(SAMPLE))
    assert report.splitlines() == [
        "salary: 1200.00",
        "coffee: -6.25",
        "rent: -1250.00",
        "TOTAL: -56.25",
    ]
