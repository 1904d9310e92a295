"""The live view on a real terminal (a pseudo-terminal), and plain lines where there is none."""

from __future__ import annotations

import re

from .conftest import consumer_args, produce_orders, run_script, summary
from .terminal import Terminal, run_in_terminal

HIDE_CURSOR = b"\x1b[?25l"  # rich hides the cursor while it redraws a live display
SHOW_CURSOR = b"\x1b[?25h"
PANEL_VALUES = re.compile(
    r"│\s+(?P<processed>[\d,]+)\s+(?P<retries>[\d,]+)\s+(?P<dlq>[\d,]+)\s+(?P<rate>[\d.,]+)"
    r"\s+\$(?P<avg>[\d.,]+)\s+(?P<lag>[\d,]+)\s+│"
)
STATUS_LINE = re.compile(
    r"Status: processed=(?P<processed>\d+) retries=(?P<retries>\d+) dlq=(?P<dlq>\d+) errors=(?P<errors>\d+)"
    r" rate=[\d.]+/s avg=(?P<avg>[\d.]+) lag=(?P<lag>\d+|\?)"
)


def plain_status_lines(output: bytes) -> list[str]:
    """The complete `Status:` lines written so far (an unfinished last line is left out)."""
    complete = output.decode(errors="replace").split("\n")[:-1]
    return [line.strip() for line in complete if line.startswith("Status:")]


def status_with_all_done(output: bytes, count: int) -> dict[str, str] | None:
    """The fields of the first plain Status line by which `count` orders were done, if any yet."""
    for line in plain_status_lines(output):
        if (match := STATUS_LINE.fullmatch(line)) and int(match["processed"]) + int(match["dlq"]) == count:
            return match.groupdict()
    return None


def test_consumer_shows_a_live_status_panel_in_a_terminal(bootstrap_servers, topics):
    produce_orders(topics.orders, 200, "--seed", "3")
    run = run_in_terminal(
        "consumer", *consumer_args(topics, "--idle-timeout", "3", "--seed", "5", "--retry-backoff", "0")
    )
    assert run.exit_status == 0, run.text
    assert HIDE_CURSOR in run.raw
    final = summary(run.text)
    assert int(final["processed"]) + int(final["dlq"]) == 200
    panel = [m.groupdict() for line in run.screen if (m := PANEL_VALUES.search(line))]
    assert len(panel) == 1, run.text  # redrawn in place: one panel on the screen, not one per update
    values = {key: value.replace(",", "") for key, value in panel[0].items()}
    assert values["processed"] == final["processed"]
    assert values["retries"] == final["retries"]
    assert values["dlq"] == final["dlq"]
    assert values["avg"] == final["avg"]
    assert values["lag"] == "0"
    assert any(line.startswith("Running Average: $") for line in run.screen)  # the per-order lines too


def test_ctrl_c_under_the_live_view_is_clean(bootstrap_servers, topics):
    produce_orders(topics.orders, 50, "--seed", "3")
    with Terminal("consumer", *consumer_args(topics, "--failure-rate", "0")) as terminal:
        terminal.wait_for(lambda output: b"Count: 50)" in output, "the 50th order counted")
        terminal.ctrl_c()
        run = terminal.finish()
    assert run.exit_status == 0, run.text
    assert run.raw.rfind(SHOW_CURSOR) > run.raw.rfind(HIDE_CURSOR)  # the terminal is left as it was
    assert b"Traceback" not in run.raw
    assert "SIGINT: finishing up" in run.text
    assert summary(run.text)["processed"] == "50"


def test_no_color_gives_plain_status_lines(bootstrap_servers, topics):
    produce_orders(topics.orders, 240, "--seed", "3")
    consumer = consumer_args(topics, "--retry-backoff", "0")
    with Terminal("consumer", *consumer, NO_COLOR="1") as terminal:
        # Plain lines come at most every PLAIN_LINE_EVERY_S (10 s, not settable): at least that long.
        status = terminal.wait_for(
            lambda output: status_with_all_done(output, 240), "a Status line showing all 240 orders done"
        )
        terminal.ctrl_c()
        run = terminal.finish()
    assert run.exit_status == 0, run.text
    assert b"\x1b" not in run.raw
    lines = plain_status_lines(run.raw)
    assert all((match := STATUS_LINE.fullmatch(line)) and match["errors"] == "0" for line in lines), lines
    final = summary(run.raw.decode())
    assert int(final["processed"]) + int(final["dlq"]) == 240
    shared = ("processed", "retries", "dlq", "avg")  # the line by which all was done matches the summary
    assert {key: status[key] for key in shared} == {key: final[key] for key in shared}, (status, final)
    assert status["errors"] == "0" and status["lag"] == "0", status


def test_piped_output_has_no_escape_sequences(bootstrap_servers, topics):
    produce_orders(topics.orders, 20, "--seed", "3")
    result = run_script("consumer", *consumer_args(topics, "--idle-timeout", "3"))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert "╭" not in result.stdout
    assert result.stdout.count("Received order: ") == 20


def test_producer_shows_a_progress_bar_for_count(bootstrap_servers, topics):
    run = run_in_terminal(
        "producer", "--topic", topics.orders, "--count", "300", "--interval", "0.005", "--quiet"
    )
    assert run.exit_status == 0, run.text
    assert HIDE_CURSOR in run.raw
    bar = [line for line in run.screen if f"Sending to {topics.orders}" in line]
    assert len(bar) == 1 and "300/300 orders" in bar[0], run.text
    assert summary(run.text) == {"sent": "300", "delivered": "300", "failed": "0"}


def test_piped_producer_shows_no_progress_bar(bootstrap_servers, topics):
    result = run_script("producer", "--topic", topics.orders, "--count", "5", "--interval", "0")
    assert result.returncode == 0
    assert "Sending to" not in result.stdout and "\x1b" not in result.stdout
