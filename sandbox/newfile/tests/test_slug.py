"""Tests for textkit.slug (the module is imported inside each test)."""


def test_slugify_basic():
    from textkit.slug import slugify

    assert slugify("Hello, World!") == "hello-world"
    assert slugify("  Crème brûlée   recipes ") == "creme-brulee-recipes"


def test_slugify_strips_stray_separators():
    from textkit.slug import slugify

    assert slugify("--Already--slugged--") == "already-slugged"
    assert slugify("!!!") == ""


def test_slugify_max_length_cuts_at_word_boundary():
    from textkit.slug import slugify

    assert slugify("The quick brown fox", max_length=12) == "the-quick"
    assert slugify("The quick brown fox", max_length=9) == "the-quick"
    assert slugify("Supercalifragilistic", max_length=5) == "super"
