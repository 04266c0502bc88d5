"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape


class I2IError(Exception):
    """A user-facing problem: the message names what is wrong and how to fix it (one line, no traceback)."""


def first_line(exc: BaseException, limit: int = 120) -> str:
    """An exception's first non-blank message line (its type's name when it has none); a longer one is cut to at
    most ``limit`` characters at a word boundary, ending in "…"."""
    lines = [li.strip() for li in str(exc).splitlines() if li.strip()]
    return shorten(lines[0] if lines else type(exc).__name__, limit)


def shorten(line: str, limit: int) -> str:
    """``line``, or at most ``limit`` characters of it cut at a word boundary and ending in "…"."""
    if len(line) <= limit:
        return line
    head = line[: limit - 1]  # room for the "…"
    if line[limit - 1] != " ":  # the cut falls inside a word: drop the word, unless it is a long one (a path)
        space = head.rfind(" ")
        head = head[:space] if space > limit // 2 else head
    return head.rstrip(" ,;:(") + "…"


def warn(text: str, console: Console | None = None) -> None:
    """One ``warning:`` line on ``console`` (standard error by default), ``text`` verbatim (never read as markup)."""
    (console or Console(stderr=True)).print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when nothing is close."""
    word, choices = str(word), [str(c) for c in choices]
    same_case = [c for c in choices if c.lower() == word.lower()]
    close = same_case or difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
