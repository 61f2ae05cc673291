"""Small text helpers: accent stripping, whitespace cleanup and URL slugs."""

from textkit.normalize import collapse_whitespace, strip_accents

__all__ = ["collapse_whitespace", "strip_accents"]
