"""The one Markdown table of ``benchmarks/gpu_check.sh``: every step's results, one row per
case, read from the steps' own output (standard library only, so the table is written even
where torch or the project fails to import).

    python benchmarks/gpu_report.py STEPS.tsv OUT.md

STEPS.tsv has one line per step: name, status, seconds, log file (tab-separated). A step that
succeeded contributes the rows of the tables it printed, Markdown or fixed-width (each value
named by its column), and its ``device:`` / ``ratio`` lines; a step that failed or timed out,
the end of its log.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SEPARATOR = re.compile(r"^\|\s*:?-+")
# Fixed-width tables (step_speed.py's): columns two or more spaces apart.
GAP = re.compile(r"\s{2,}")
NUMBER = re.compile(r"^[-+]?[\d.,]+(x|%)?$")
# Free-standing lines worth a row of their own: each table's context and a summary.
NOTES = ("device:", "ratio", "Inception (", "speed against")


def cells(line: str) -> list[str]:
    """The cells of a Markdown table line."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def named(header: list[str], row: list[str], keys: int) -> tuple[str, str]:
    """(case, result) of a table row: its first ``keys`` cells, then the others named by their
    column (a two-column table is a list of values and needs no name)."""
    if len(header) == 2:
        return row[0], row[1]
    return " ".join(row[:keys]), "; ".join(f"{h}: {v}" for h, v in zip(header[keys:], row[keys:])
                                           if v)


def plain_table(lines: list[str], i: int) -> tuple[list[tuple[str, str]], int]:
    """The rows of a fixed-width table whose header is ``lines[i]`` and how many lines it
    takes; ([], 0) when none starts there (a header is followed by rows of as many columns,
    some of them numbers). Its case is the leading cells that are not numbers."""
    header = GAP.split(lines[i].strip())
    rows = []
    for line in lines[i + 1:]:
        c = GAP.split(line.strip())
        if len(c) != len(header) or len(header) < 2 or not any(NUMBER.match(v) for v in c):
            break
        rows.append(c)
    if not rows:
        return [], 0
    keys = next((k for k, v in enumerate(rows[0]) if NUMBER.match(v)), 1) or 1
    return [named(header, r, keys) for r in rows], len(rows) + 1


def parse(text: str) -> list[tuple[str, str]]:
    """(case, result) pairs found in a step's output: the rows of its Markdown tables and of
    its fixed-width tables (each value named by its column), and its ``NOTES`` lines."""
    lines = text.splitlines()
    out: list[tuple[str, str]] = []
    header: list[str] | None = None
    skip = 0
    for i, line in enumerate(lines):
        s = line.strip()
        if skip:
            skip -= 1
            continue
        if s.startswith("|"):
            if i + 1 < len(lines) and SEPARATOR.match(lines[i + 1].strip()):
                header = cells(s)
            elif header and not SEPARATOR.match(s):
                out.append(named(header, cells(s), 1))
            continue
        header = None
        if s.startswith(NOTES):
            out.append(("", s))
            continue
        rows, used = plain_table(lines, i)
        out += rows
        skip = max(0, used - 1)
    return out


def escape(text: str, limit: int = 400) -> str:
    """One table cell: pipes escaped, newlines as <br>, at most ``limit`` characters."""
    text = text.strip().replace("|", "\\|").replace("\n", "<br>")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def report(steps: Path, out: Path) -> str:
    """One Markdown table from gpu_check.sh's steps file (name, status, seconds, log)."""
    rows = ["| step | case | result | status | seconds |", "|---|---|---|---|---|"]
    for line in steps.read_text().splitlines():
        name, status, seconds, log = line.split("\t")
        text = Path(log).read_text(errors="replace") if Path(log).is_file() else ""
        found = parse(text) if status == "ok" else []
        if not found:
            tail = "\n".join(t for t in text.splitlines() if t.strip())[-400:]
            found = [("", tail or "(no output)")]
        for j, (case, result) in enumerate(found):
            rows.append(f"| {name if j == 0 else ''} | {escape(case, 80)} | {escape(result)} | "
                        f"{status if j == 0 else ''} | {seconds if j == 0 else ''} |")
    table = "\n".join(rows) + "\n"
    out.write_text(table)
    return table


def main(argv: list[str] | None = None) -> None:
    """``gpu_report.py STEPS.tsv OUT.md``: write the table and print it."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python benchmarks/gpu_report.py STEPS.tsv OUT.md")
    print(report(Path(args[0]), Path(args[1])), end="")


if __name__ == "__main__":
    main()
