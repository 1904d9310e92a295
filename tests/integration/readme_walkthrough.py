"""The README's "Running it step by step", read as a new user reads it: its bash commands in order,
which terminal each runs in, and the sample output printed after them.

Only parsing lives here; test_readme_walkthrough.py runs what this returns against a real broker.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

WALKTHROUGH_HEADING = "## Running it step by step"
TERMINAL_NOTE = re.compile(r"#\s*terminal (\d)")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Command:
    text: str  # the command as written, without its trailing `# comment`
    step: str  # the `###` heading it is under
    terminal: int  # 1 or 2: a `# terminal N` note, else the terminal of the command before it
    sample: list[str] = field(default_factory=list)  # output shown right after its block, if any

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text)


@dataclass
class Captured:
    """A `$ command` line of a captured session and the lines it printed."""

    command: str
    output: list[str]


def walkthrough_section(readme: str) -> list[str]:
    lines = readme.splitlines()
    start = lines.index(WALKTHROUGH_HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start + 1 : end]


def fenced_blocks(lines: list[str]) -> list[tuple[str, str, list[str]]]:
    """(step heading, language, lines) for each fenced block, in order."""
    blocks: list[tuple[str, str, list[str]]] = []
    step: str = ""
    language: str | None = None
    body: list[str] = []
    for line in lines:
        if language is None and line.startswith("### "):
            step = line.removeprefix("### ")
        elif match := FENCE.match(line):
            if language is None:
                language, body = match.group(1), []
            else:
                blocks.append((step, language, body))
                language = None
        elif language is not None:
            body.append(line)
    return blocks


def without_comment(line: str) -> str:
    """The command before its `#` comment (none of the walk-through's commands quotes a #)."""
    return line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""


def commands(readme: str) -> list[Command]:
    """Every bash command of the walk-through in order. A plain (language-less) block right after
    a bash block is that block's sample output, given to its last command."""
    found: list[Command] = []
    terminal = 1
    for step, language, body in fenced_blocks(walkthrough_section(readme)):
        if language == "" and found and not any(line.startswith("$ ") for line in body):
            found[-1].sample = body
        if language != "bash":
            continue
        for line in body:
            if note := TERMINAL_NOTE.search(line):
                terminal = int(note.group(1))
            if text := without_comment(line):
                found.append(Command(text, step, terminal))
    return found


def captured_sessions(readme: str) -> list[Captured]:
    """The `$ command` sessions captured in the walk-through's plain blocks."""
    sessions: list[Captured] = []
    for _, language, body in fenced_blocks(walkthrough_section(readme)):
        if language != "" or not body or not body[0].startswith("$ "):
            continue
        for line in body:
            if line.startswith("$ "):
                sessions.append(Captured(line.removeprefix("$ "), []))
            else:
                sessions[-1].output.append(line)
    return sessions


# What changes from one run to the next: order ids, topic names, numbers.
VARIABLE = re.compile(r"ORD-[0-9A-F]+-\d+|orders[\w.-]*|\d+(?:\.\d+)?")


def shape(sample_line: str) -> re.Pattern[str]:
    """A pattern for lines like `sample_line`, whatever the ids, topics and figures in them."""
    pattern, position = [], 0
    for match in VARIABLE.finditer(sample_line):
        pattern.append(re.escape(sample_line[position : match.start()]))
        pattern.append(r"\d+(?:\.\d+)?" if match.group()[0].isdigit() else r"\S+")
        position = match.end()
    pattern.append(re.escape(sample_line[position:]))
    return re.compile("".join(pattern) + "$")


# Lines the README describes in prose rather than in a sample: with the consumer of step 3 still
# running, a replayed order can fail again and come back to the DLQ while the replay reads it, and
# a copy replayed three times is refused, as step 5 says.
DESCRIBED_IN_PROSE = [
    re.compile(
        r"Refused \S+ \[\d+\] offset \d+ \(orderId \S+\): replayed \d+ times already \(--max-replays \d+\)$"
    )
]


def differences(output: str, sample: list[str]) -> list[str]:
    """The lines of `output` that look like no line of `sample`, and the lines of `sample` that
    no line of `output` looks like: empty when the command printed what the README shows."""
    shown = [line for line in sample if line.strip()]
    printed = [line for line in output.splitlines() if line.strip()]
    shapes = {line: shape(line) for line in shown}
    unexpected = [
        f"printed, not shown: {line}"
        for line in printed
        if not any(s.match(line) for s in [*shapes.values(), *DESCRIBED_IN_PROSE])
    ]
    missing = [
        f"shown, not printed: {line}" for line, s in shapes.items() if not any(s.match(p) for p in printed)
    ]
    return unexpected + missing
