"""Run a script in a pseudo-terminal, as a user's shell would, and keep what the screen shows."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import pexpect
import pyte

from .conftest import REPO, SCRIPTS

COLUMNS, ROWS = 120, 40


@dataclass
class TerminalRun:
    raw: bytes  # everything written to the terminal, escape sequences included
    screen: list[str]  # the screen after the script exited, as a terminal emulator draws it
    exit_status: int | None

    @property
    def text(self) -> str:
        return "\n".join(self.screen)


def run_in_terminal(
    name: str, *args: str, timeout: float = 120, ctrl_c_when: bytes | None = None, **env: str
) -> TerminalRun:
    """Run SCRIPTS[name] on a pseudo-terminal until it exits, reading as it writes (a terminal
    that is not read fills up and blocks the script). With ctrl_c_when, press Ctrl-C once the
    output contains those bytes."""
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.ByteStream(screen)
    # A colour terminal unless the test says otherwise, whatever the environment running the tests.
    inherited = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    environment = {**inherited, "TERM": "xterm-256color", **env}
    child = pexpect.spawn(
        sys.executable, [str(SCRIPTS[name]), *args], cwd=REPO, env=environment, dimensions=(ROWS, COLUMNS)
    )
    raw = bytearray()
    try:
        while True:
            try:
                chunk = child.read_nonblocking(65536, timeout=timeout)  # silent that long: TIMEOUT
            except pexpect.EOF:
                break
            raw += chunk
            stream.feed(chunk)
            if ctrl_c_when is not None and ctrl_c_when in raw:
                child.sendintr()
                ctrl_c_when = None
    finally:
        child.close(force=True)  # a script still running after a failure is killed
    return TerminalRun(bytes(raw), [line.rstrip() for line in screen.display], child.exitstatus)
