"""What every CLI command shares: one output contract.

* ``--json`` means JSON lines: ``print_json`` writes one object per line (records, then a final
  summary object where a command has one, each with a ``kind``).
* A person gets ``table``: drawn by ``rich`` to fit the terminal's width (long cells end in an
  ellipsis, numbers align right), the same column names and units everywhere (``answered`` is a count,
  ``answer rate`` a percentage).
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, sort_keys=False, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 40, *,
          width: int | None = None) -> str:
    """Rows as a table as wide as the terminal; numbers and percentages align right; a cell wider than
    ``max_width`` or than the room left ends in an ellipsis. Piped (no terminal) the table is as wide as
    its cells need, for ``less -S`` and ``grep``."""
    piped = width is None and not sys.stdout.isatty()
    columns = width or (1_000_000 if piped else shutil.get_terminal_size((120, 24)).columns)
    if piped:
        max_width = 1_000_000  # as wide as the cells need
    out = io.StringIO()
    console = Console(file=out, width=max(columns, 40), color_system=None, highlight=False, emoji=False,
                      markup=False, soft_wrap=False)
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, expand=False)
    numeric = [all(_is_number(row[i]) for row in rows if i < len(row) and row[i] not in (None, ""))
               and any(i < len(row) and row[i] not in (None, "") for row in rows) for i in range(len(headers))]
    longest = [max([len(_cell(row[i])) for row in rows if i < len(row)] + [len(h)]) for i, h in enumerate(headers)]
    # numbers and the first column (what a row is about) keep their width; text columns share what is left
    kept = [i == 0 or numeric[i] for i in range(len(headers))]
    fixed = sum(min(longest[i], max_width) for i in range(len(headers)) if kept[i])
    room = max(columns - fixed - 2 * (len(headers) - 1), 0)
    flexible = [i for i in range(len(headers)) if not kept[i]]
    share = max(room // len(flexible), 4) if flexible else 0
    for i, (header, right) in enumerate(zip(headers, numeric, strict=True)):
        width_i = min(longest[i], max_width) if kept[i] else min(longest[i], max_width, share)
        grid.add_column(header.upper(), justify="right" if right else "left", overflow="ellipsis", no_wrap=True,
                        min_width=width_i if kept[i] else None, max_width=width_i)
    for row in rows:
        grid.add_row(*[_cell(v) for v in row])
    console.print(grid)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("\n", " ")


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float):
        return True
    text = str(value).strip().rstrip("%").replace(",", "")
    if text.startswith("+"):  # a phone number, not a figure
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_tty() -> bool:
    return sys.stdout.isatty()
