"""Tests for textkit.normalize."""

from textkit import collapse_whitespace, strip_accents


def test_strip_accents():
    assert strip_accents("Crème brûlée à São Paulo") == "Creme brulee a Sao Paulo"


def test_strip_accents_leaves_ascii_alone():
    assert strip_accents("plain ASCII 123") == "plain ASCII 123"


def test_collapse_whitespace():
    assert collapse_whitespace("  a \t b\n\nc  ") == "a b c"
