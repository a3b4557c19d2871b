"""Progress bars (rich) that library code can ask for and tests can switch off."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_ACTIVE: list[Progress] = []  # the live display inner bars join


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True
                 ) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; draws a bar with ETA on stderr when ``enabled``."""
    if not enabled:
        yield lambda n=1: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    from rich.console import Console

    if _ACTIVE:  # nested (a grid's job bar around a distillation's): one display, two rows
        outer = _ACTIVE[-1]
        task = outer.add_task(description, total=total)
        try:
            yield lambda n=1: outer.advance(task, n)
        finally:
            outer.remove_task(task)
        return
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as bar:
        _ACTIVE.append(bar)
        try:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        finally:
            _ACTIVE.pop()
