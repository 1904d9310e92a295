"""Run a script in a pseudo-terminal, as a user's shell would, and keep what the screen shows."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pexpect
import pyte

from ..environment import clean_env
from .conftest import REPO, SCRIPTS, wait_until

COLUMNS, ROWS = 120, 40
T = TypeVar("T")


@dataclass
class TerminalRun:
    raw: bytes  # everything written to the terminal, escape sequences included
    screen: list[str]  # the screen after the script exited, as a terminal emulator draws it
    exit_status: int | None

    @property
    def text(self) -> str:
        return "\n".join(self.screen)


class Terminal:
    """SCRIPTS[name] running on a pseudo-terminal. The test waits for what it writes (reading as
    it writes: a terminal that is not read fills up and blocks the script), may press Ctrl-C,
    and waits for it to exit. Leaving the `with` block kills a script still running."""

    def __init__(self, name: str, *args: str, **env: str) -> None:
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.exited = False
        # A colour terminal unless the test says otherwise, whatever the environment running the tests.
        self.child = pexpect.spawn(
            sys.executable,
            [str(SCRIPTS[name]), *args],
            cwd=REPO,
            env=clean_env(TERM="xterm-256color", **env),
            dimensions=(ROWS, COLUMNS),
        )

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.child.close(force=True)

    @property
    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def wait_for(self, condition: Callable[[bytes], T], what: str, timeout: float = 60) -> T:
        """Read until condition(everything written so far) is truthy, and return that; an
        AssertionError naming `what` (and showing the screen) if the script exits first or
        `timeout` s pass."""

        def check() -> T:
            self._read(wait=0.1)  # waits for output instead of sleeping between checks
            found = condition(bytes(self.raw))
            if not found and self.exited:
                raise AssertionError(f"the script exited before {what}")
            return found

        try:
            return wait_until(check, timeout, what, interval=0)
        except AssertionError as failure:
            raise AssertionError(f"{failure}; the terminal shows:\n" + "\n".join(self.lines)) from None

    def ctrl_c(self) -> None:
        self.child.sendintr()

    def finish(self, timeout: float = 120) -> TerminalRun:
        """Wait for the script to exit; what it wrote and its exit status."""
        self.wait_for(lambda _: self.exited, "the script to exit", timeout)
        self.child.close()
        return TerminalRun(bytes(self.raw), self.lines, self.child.exitstatus)

    def _read(self, wait: float) -> None:
        """Take what the script has written, waiting up to `wait` s for the first of it."""
        try:
            for _ in range(64):  # bounded, so that a script that never stops writing is checked too
                chunk = self.child.read_nonblocking(65536, timeout=wait)
                self.raw += chunk
                self.stream.feed(chunk)
                wait = 0
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            self.exited = True


def run_in_terminal(name: str, *args: str, timeout: float = 120, **env: str) -> TerminalRun:
    """Run SCRIPTS[name] on a pseudo-terminal until it exits (within `timeout` s)."""
    with Terminal(name, *args, **env) as terminal:
        return terminal.finish(timeout)
