"""What every command shares: the usage error, table layout and number formats, argument types."""
from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import sys
from typing import Any, Callable, Sequence

from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

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
    """The rows under a two-line header (group above the first column of its run, then titles),
    laid out by rich without borders: numbers right-aligned, a None row a blank line. As wide as
    the terminal when the output is one (rich folds the text columns to fit); in a pipe as wide as
    the content, so that a script reading the table gets one line per row."""
    groups = [c.group if i == 0 or c.group != columns[i - 1].group else "" for i, c in enumerate(columns)]
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0), header_style="")
    for index, (column, group) in enumerate(zip(columns, groups)):
        justify = "right" if column.align == ">" else "left"
        title = Text(column.title, justify=justify, overflow="fold")
        header = Group(Text(group, justify="left", overflow="fold"), title) if any(groups) else title
        if column.align == ">":
            # a number is never folded or cut: the text columns give way on a narrow terminal
            widest = max([len(column.title)] + [len(row[index]) for row in rows if row is not None])
            table.add_column(header, justify=justify, no_wrap=True, min_width=widest)
        else:
            table.add_column(header, justify=justify, overflow="fold")
    for row in rows:
        table.add_row(*([""] * len(columns) if row is None else row))
    console = Console(file=io.StringIO(), width=100_000, color_system=None, highlight=False, emoji=False,
                      markup=False)
    if sys.stdout.isatty():
        # fit the terminal by folding text where the numbers leave room; where they do not, the
        # table keeps its own width (and the terminal wraps) rather than squeezing words to nothing
        needed = Measurement.get(console, console.options, table)
        terminal = shutil.get_terminal_size().columns
        console.width = terminal if needed.minimum <= terminal else needed.maximum
    console.print(table)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]


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
