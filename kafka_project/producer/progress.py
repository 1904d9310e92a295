"""The producer's progress bar: shown for --count runs on a terminal, skipped everywhere else."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kafka_project.terminal import is_live_terminal

REDRAW_EVERY_S = 0.1  # updating the bar per order would cost more than producing at full speed

Advance = Callable[..., None]  # advance(sent, final=False)


@contextmanager
def progress_bar(total: int | None, topic: str) -> Iterator[Advance]:
    """Yields advance(sent, final=False); a no-op without --count or off a live terminal."""
    if total is None or not is_live_terminal():
        yield lambda _sent, final=False: None
        return
    columns = (
        TextColumn(f"[bold]Sending to {topic}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("orders"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, redirect_stdout=True, redirect_stderr=True) as progress:
        task = progress.add_task("orders", total=total)
        drawn_at = 0.0

        def advance(sent: int, final: bool = False) -> None:
            nonlocal drawn_at
            if final or time.monotonic() - drawn_at >= REDRAW_EVERY_S:
                progress.update(task, completed=sent)
                drawn_at = time.monotonic()

        yield advance
