"""Whether output may be animated: only on a real terminal, and never when the user opted out."""

from __future__ import annotations

import os
import sys
from typing import TextIO


def is_live_terminal(stream: TextIO = sys.stdout) -> bool:
    """True on an interactive terminal; pipes, files, NO_COLOR (https://no-color.org) and
    TERM=dumb get plain lines instead of a live display."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
