"""The consumer's Status on screen: a live panel below the per-order lines, or plain lines."""

from __future__ import annotations

import time
from typing import Protocol

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from kafka_project.consumer.status import Status
from kafka_project.terminal import is_live_terminal

PLAIN_LINE_EVERY_S = 10.0


class StatusDisplay(Protocol):
    def show(self, status: Status) -> None: ...

    def close(self) -> None: ...


def render(status: Status, title: str) -> Panel:
    cells = {
        "processed": f"{status.processed:,}",
        "retries": f"{status.retries:,}",
        "DLQ": f"{status.dead_lettered:,}",
        "orders/s": f"{status.orders_per_s:,.1f}",
        "running avg": f"${status.average:,}",
        "lag": "?" if status.lag is None else f"{status.lag:,}",
    }
    if status.errors:
        cells["errors"] = f"[red]{status.errors:,}[/red]"
    grid = Table.grid(padding=(0, 3))
    for _ in cells:
        grid.add_column(justify="right")
    grid.add_row(*(f"[dim]{label}[/dim]" for label in cells))
    grid.add_row(*(f"[bold]{value}[/bold]" for value in cells.values()))
    return Panel(grid, title=title, title_align="left", expand=False)


class LivePanel:
    """A panel rich redraws in place; the consumer's own print()s scroll by above it."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.live = Live(
            render(Status(), title),
            console=Console(),
            refresh_per_second=4,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self.live.start()

    def show(self, status: Status) -> None:
        self.live.update(render(status, self.title))

    def close(self) -> None:
        self.live.stop()  # the last panel stays on screen


class PlainLines:
    """A `Status:` line now and then, and only when something changed: fine for logs and pipes."""

    def __init__(self) -> None:
        self.printed_at = time.monotonic()
        self.last_line = Status().line()

    def show(self, status: Status) -> None:
        line = status.line()
        if time.monotonic() - self.printed_at >= PLAIN_LINE_EVERY_S and line != self.last_line:
            print(line, flush=True)
            self.printed_at, self.last_line = time.monotonic(), line

    def close(self) -> None:
        pass


def status_display(title: str) -> StatusDisplay:
    return LivePanel(title) if is_live_terminal() else PlainLines()
