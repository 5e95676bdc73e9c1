"""Tables for people and JSON for scripts, through ``rich``: one table shape for both, so the
JSON keys are the column names."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # rich is imported when something is printed: ``regcache serve`` imports the commands
    # (for its parser) and never prints a table, and rich is a tenth of a second to load.
    from rich.console import Console

# Off a terminal nothing says how wide a line may be; rich would assume 80 columns and fold
# every image name and digest in a CI log. A log line may be long.
PIPE_WIDTH = 200


def console(stderr: bool = False) -> Console:
    """A console that writes plain text, with no colours or cursor codes, when not a
    terminal, so that logs and pipes read cleanly."""
    from rich.console import Console

    out = Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = PIPE_WIDTH
    return out


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    as_json: bool,
    title: str | None = None,
) -> None:
    if as_json:
        document = [{column: row.get(column) for column in columns} for row in rows]
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        return
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        # Folded, not cut short: an image name or digest is no use with its end missing.
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)
