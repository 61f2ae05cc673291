"""Colours that read: the WCAG contrast of two colours, a theme colour made legible on the
transcript's background (in truecolor and in the 256 colours a terminal may downgrade it to),
and a diff's lines styled by kind (colours, or attributes under NO_COLOR).

Pure: no widget, no I/O; the transcript asks it how to colour what it draws.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.color import ColorSystem
from rich.style import Style
from rich.text import Text
from textual.color import Color, ColorParseError

MIN_CONTRAST = 4.5  # WCAG AA for body text
# diff line kind -> (theme variable for its colour, its attributes where colours are off)
DIFF_STYLES = {
    "file": ("foreground", "bold underline"),
    "hunk": ("text-accent", "reverse"),
    "added": ("text-success", "bold"),
    "removed": ("text-error", "strike"),
    "context": ("foreground", ""),
}


def contrast(a: Color, b: Color) -> float:
    """The WCAG 2 contrast ratio of two opaque colours."""
    def luminance(colour: Color) -> float:
        def linear(value: int) -> float:
            c = value / 255
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        return 0.2126 * linear(colour.r) + 0.7152 * linear(colour.g) + 0.0722 * linear(colour.b)
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def legible(colour: Color, background: Color, text: Color) -> Color:
    """`colour`, moved toward the text colour until it reads at 4.5:1 on `background` both in
    truecolor and in the 256 colours a terminal may downgrade both to."""
    def downgraded(c: Color) -> Color:
        return Color.from_rich_color(c.rich_color.downgrade(ColorSystem.EIGHT_BIT))
    for step in range(11):
        shade = colour.blend(text, step / 10)
        if min(contrast(shade, background),
               contrast(downgraded(shade), downgraded(background))) >= MIN_CONTRAST:
            return shade
    return text


def theme_colour(variables: Mapping[str, str], variable: str, background: Color) -> Style | None:
    """A colour of the theme (one of its CSS variables), made legible on `background`, so dark
    and light themes both read well; None where the theme has no such colour."""
    try:
        colour = Color.parse(variables[variable])
        text = Color.parse(variables.get("foreground", "white"))
    except (KeyError, ColorParseError):
        return None
    return Style(color=legible(background + colour, background, background + text).rich_color)


def diff_text(diff: str, variables: Mapping[str, str], background: Color,
              no_color: bool) -> Text:
    """A diff, each kind of line in its own legible theme colour, or where colours are off
    (NO_COLOR) in its own attributes."""
    if no_color:
        styles = {kind: Style.parse(attrs or "none") for kind, (_, attrs) in DIFF_STYLES.items()}
    else:
        styles = {kind: theme_colour(variables, variable, background) or Style()
                  for kind, (variable, _) in DIFF_STYLES.items()}
    text = Text()
    for line, kind in diff_kinds(diff):
        text.append(line + "\n", styles[kind])
    text.rstrip()
    return text


def diff_kinds(diff: str) -> list[tuple[str, str]]:
    """Each line of a unified diff (or a V4A patch) with its kind, a key of DIFF_STYLES."""
    lines = diff.rstrip("\n").splitlines()
    kinds = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if (line.startswith(("diff ", "index ", "*** "))
                or (line.startswith("--- ") and following.startswith("+++ "))
                or (line.startswith("+++ ") and kinds and kinds[-1][1] == "file")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "added"
        elif line.startswith("-"):
            kind = "removed"
        else:
            kind = "context"
        kinds.append((line, kind))
    return kinds
