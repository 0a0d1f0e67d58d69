"""What every command shares: the usage error, table layout and number formats, argument types."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Sequence

from ..scenario import flatten_errors
from ..sdk import PolicyParameterError


EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake on the command line; each line is printed as one ``error:`` line."""

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


@dataclasses.dataclass(frozen=True)
class Column:
    group: str          # printed above the first column of a run of columns with the same group
    title: str
    align: str          # "<" text, ">" numbers
    cell: Callable[..., str]


def format_table(columns: Sequence[Column], rows: Sequence[Sequence[str] | None]) -> list[str]:
    """Aligned plain-text columns under a two-line header (group, title); a None row is a blank
    separator line."""
    groups = [c.group if i == 0 or c.group != columns[i - 1].group else "" for i, c in enumerate(columns)]
    widths = [max([len(c.title), len(g)] + [len(row[i]) for row in rows if row is not None])
              for i, (c, g) in enumerate(zip(columns, groups))]

    def line(cells: Sequence[str], aligns: Sequence[str]) -> str:
        return "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(cells, aligns, widths)).rstrip()

    out = []
    if any(groups):
        out.append(line(groups, "<" * len(columns)))
    out.append(line([c.title for c in columns], [c.align for c in columns]))
    out += ["" if row is None else line(row, [c.align for c in columns]) for row in rows]
    return out


def _count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _mb(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.1f}"


def _ratio(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}x"


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1 to 65535)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def _parameter_problems(exc: PolicyParameterError) -> list[str]:
    return [f"policy {exc.policy!r}: parameter {path}: {message}"
            for path, messages in flatten_errors(exc.messages).items() for message in messages]
