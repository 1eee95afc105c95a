"""Capping what the command line prints about a user's input: no error can print megabytes.

A problem line quotes what the user wrote (a key, a value, a path), and what the user wrote can
be a megabyte long or a list of a million keys. Every error and warning line the CLI prints goes
through ``clip_line``; a list of problems through ``clip_lines``.
"""

from __future__ import annotations

from collections.abc import Sequence

# A line long enough for any message of ours and the values it quotes, short enough to read.
MAX_LINE = 400
# Problems printed before the rest are counted: the first ones are the ones to fix first.
MAX_LINES = 50
ELLIPSIS = "..."


def clip_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` on one line of at most ``limit`` characters, cut with an ellipsis."""
    cut = len(text) > limit
    text = " ".join(text[:limit].splitlines())  # only the head: the text may be megabytes
    return text[:limit - len(ELLIPSIS)] + ELLIPSIS if cut else text


def clip_lines(lines: Sequence[str], limit: int = MAX_LINES) -> list[str]:
    """The first ``limit`` lines (one more saying how many were left out), each clipped."""
    out = [clip_line(line) for line in lines[:limit]]
    if len(lines) > limit:
        out.append(f"... and {len(lines) - limit} more problems")
    return out
