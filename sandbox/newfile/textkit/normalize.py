"""Normalisation helpers shared by the rest of textkit."""

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


def strip_accents(text: str) -> str:
    """Remove accents and other combining marks, e.g. ``"Crème" -> "Creme"``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def collapse_whitespace(text: str) -> str:
    """Trim ``text`` and replace every run of whitespace with a single space."""
    return _WHITESPACE.sub(" ", text).strip()
