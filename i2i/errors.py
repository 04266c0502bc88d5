"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class I2IError(Exception):
    """A user-facing problem: the message names what is wrong and how to fix it (one line, no traceback)."""


def first_line(exc: BaseException, limit: int = 120) -> str:
    """An exception's first non-blank message line (its type's name when it has none), cut to ``limit``."""
    lines = [li.strip() for li in str(exc).splitlines() if li.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when nothing is close."""
    word, choices = str(word), [str(c) for c in choices]
    same_case = [c for c in choices if c.lower() == word.lower()]
    close = same_case or difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
