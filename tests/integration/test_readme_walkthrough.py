"""The README's "Running it step by step", run as a new user runs it: every bash command in the
order written, extracted from README.md itself (so the README cannot drift from the code), in a
fresh copy of the repo with its own virtualenv and its own broker.

The copy's `bin/kafka-local start` (step 1) starts that broker on ports of its own (29092), so the
commands run as written, default topics and groups included, without touching the broker the
other tests share; `localhost:9092` in a command becomes `localhost:29092`, and
KAFKA_BOOTSTRAP_SERVERS says so to the commands that use the default. The one other setting is
FAILURE_RATE, as step 3 suggests, so that the DLQ steps have records. Step 7 stops and deletes
that broker, as a user would.

Two terminals, as the README says: a command marked `# terminal N` runs in terminal N, the others
in the terminal of the command before. A `source` line stays in force for its terminal. A
command that runs until Ctrl-C (consumer, producer without --count, console consumer) is left
running and gets Ctrl-C when the next command is typed in its terminal, once it has done what
a user waits for.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from ..environment import clean_env
from .conftest import REPO, Topics, committed_offset, records, summary, wait_until
from .readme_walkthrough import Command, captured_sessions, commands, differences

FAILURE_RATE = "0.8"  # step 3's hint for a DLQ with records: about half the orders fail three tries
README_BROKER = "localhost:9092"
PORTS = {"KAFKA_PORT": "29092", "ZOOKEEPER_PORT": "22181", "KAFKA_SASL_PORT": "29094"}  # the copy's broker
BROKER = f"localhost:{PORTS['KAFKA_PORT']}"
NAMES = Topics(orders="orders", dlq="orders-dlq", group="order-consumer", stats="orders-stats")  # defaults


@dataclass
class Running:
    """A command left running in a terminal."""

    command: str
    process: subprocess.Popen
    log: Path
    done: Callable[[], object]  # what a user waits for before pressing Ctrl-C
    group: str | None = None  # a consumer's group, to wait until it has caught up

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Terminals:
    """The user's two terminals in a copy of the repo: the environment, what each has sourced,
    and the command still running in each."""

    def __init__(self, workdir: Path, env: dict[str, str], logs: Path) -> None:
        self.workdir, self.env, self.logs = workdir, env, logs
        self.sourced: dict[int, list[str]] = {1: [], 2: []}
        self.running: dict[int, Running] = {}

    def script(self, terminal: int, command: str) -> list[str]:
        return ["bash", "-c", "set -e\n" + "\n".join([*self.sourced[terminal], command])]

    def run(self, terminal: int, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.script(terminal, command),
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            preexec_fn=ctrl_c_as_in_a_terminal,
        )

    def start(self, terminal: int, command: str, done: Callable[[], object], group: str | None) -> Running:
        log = self.logs / f"terminal{terminal}-{len(list(self.logs.iterdir()))}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                self.script(terminal, command),
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches bash and its command, as in a terminal
                preexec_fn=ctrl_c_as_in_a_terminal,
            )
        self.running[terminal] = Running(command, process, log, done, group)
        return self.running[terminal]

    def ctrl_c(self, terminal: int) -> Running | None:
        """Wait until the command running in `terminal` did what the user waits for, press
        Ctrl-C, and wait for it to exit."""
        running = self.running.pop(terminal, None)
        if running:
            ended = running.process.poll
            wait_until(lambda: ended() is not None or running.done(), 120, f"{running.command!r} to be ready")
            assert ended() is None, f"{running.command!r} ended before Ctrl-C:\n{running.output}"
            os.killpg(running.process.pid, signal.SIGINT)
            running.process.wait(60)
        return running

    def close(self) -> None:
        """Whatever is still running (a failed check left it), killed."""
        for running in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGKILL)
            running.process.wait(10)
        self.running.clear()


def ctrl_c_as_in_a_terminal() -> None:
    """In the child: Ctrl-C handled as in a shell, even when the tests run with SIGINT ignored
    (started in the background), which every child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def copy_of_repo(destination: Path) -> Path:
    """What a fresh clone holds (tracked files, and new ones not yet committed). The Kafka jars
    bin/kafka-local fetched for the other tests are lent to it (a new user fetches them once)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, target = REPO / name, destination / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    if (jars := REPO / ".local-kafka/lib").is_dir():
        (destination / ".local-kafka").mkdir()
        (destination / ".local-kafka/lib").symlink_to(jars)
    return destination


def session_env() -> dict[str, str]:
    """A new user's shell: no virtualenv active; the copy's broker on ports of its own."""
    venv_bin = str(REPO / ".venv/bin")
    env = {key: value for key, value in clean_env().items() if key not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    return {
        **env,
        **PORTS,
        "KAFKA_BOOTSTRAP_SERVERS": BROKER,
        "FAILURE_RATE": FAILURE_RATE,
        "PYTHONUNBUFFERED": "1",  # a terminal shows each line at once; these go to files
    }


def why_not_run(command: str) -> str | None:
    if command.startswith("docker "):
        return "no Docker engine here (the Docker lines are checked against docker-compose.yml)"
    if "broker:9092" in command:
        return "an example with a placeholder broker"
    return None


def end_offset(bootstrap_servers: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "readme-walkthrough-watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
    finally:
        consumer.close()


def program(command: str) -> str:
    """consumer.py, producer.py, dlq_producer.py, stats.py, kafka-console-consumer, ..."""
    words = command.split()
    return next((Path(word).name for word in words if word.endswith(".py")), Path(words[0]).name)


def option(words: list[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words else None


class Walkthrough:
    """The broker-side facts the checks need, and what each kind of command must do."""

    def __init__(self, terminals: Terminals, readme: str) -> None:
        self.terminals, self.readme = terminals, readme

    def orders_count(self) -> int:
        """Records in the orders topic: fewer than its end offset once a replay has written its
        transactions' commit markers there."""
        return len(records(BROKER, NAMES.orders))

    def dlq_orders(self) -> list[str]:
        return [order_id_in(msg.value()) for msg in records(BROKER, NAMES.dlq)]

    def orders_next(self) -> int:
        """One past the last record of the orders topic: what a consumer that has read them all
        commits (a replay's last commit marker may follow it, and raise the end offset by one)."""
        kept = records(BROKER, NAMES.orders)
        return kept[-1].offset() + 1 if kept else 0

    def caught_up(self, group: str) -> bool:
        committed = committed_offset(BROKER, group, NAMES.orders)
        return max(committed, 0) == self.orders_next()  # never committed (-1001): nothing to do yet

    def settle(self) -> None:
        """Before the next command: the consumers still running have done every order so far
        (the README's sample output assumes it)."""
        for running in self.terminals.running.values():
            if group := running.group:
                wait_until(lambda: self.caught_up(group), 120, f"{running.command!r} to catch up")

    def start(self, command: Command, text: str) -> None:
        """A command that runs until Ctrl-C, and what the user waits for before pressing it."""
        terminal, words = command.terminal, text.split()
        if program(text) == "consumer.py":
            group = option(words, "--group-id") or NAMES.group
            consumer = self.terminals.start(terminal, text, lambda: self.caught_up(group), group)
            wait_until(lambda: "Listening for orders" in consumer.output, 60, f"{text!r} to listen")
        elif program(text) == "producer.py":  # stopped once an order is in the DLQ, for steps 4 and 5
            self.terminals.start(terminal, text, self.dlq_orders, None)
        elif program(text) == "kafka-console-consumer":  # stopped once it printed every DLQ record
            expected = self.dlq_orders()
            assert expected, "the walk-through reached the DLQ steps with an empty DLQ"
            console = self.terminals.start(
                terminal, text, lambda: all(order in console.output for order in expected), None
            )

    def check_stopped(self, running: Running | None) -> None:
        """What a command left running must have done once Ctrl-C ended it."""
        if running is None:
            return
        output = running.output
        assert "Traceback" not in output, output
        if program(running.command) in ("consumer.py", "producer.py"):
            assert running.process.returncode == 0, output
        if program(running.command) == "consumer.py":
            figures = summary(output)
            done = int(figures["processed"]) + int(figures["dlq"]) + int(figures.get("passed_over", 0))
            assert done == self.orders_count(), output
        elif program(running.command) == "producer.py":
            assert output.count("Sent order: ") == output.count("Message delivered to ") >= 1, output
        elif program(running.command) == "kafka-console-consumer":
            assert f"Processed a total of {len(self.dlq_orders())} messages" in output, output

    def run(self, command: Command, text: str) -> None:
        """A command that ends by itself: its exit code, its output against the sample the README
        prints, and its effect on the broker."""
        words = text.split()
        sends = program(text) == "producer.py" or "replay" in words
        before = self.orders_count() if sends else 0
        result = self.terminals.run(command.terminal, text)
        output = result.stdout
        assert result.returncode == 0 and "Traceback" not in output + result.stderr, (
            f"{text}\n{output}\n{result.stderr}"
        )
        if command.sample:
            assert differences(output, command.sample) == [], f"{text} printed\n{output}"
        if words[:2] == ["bin/kafka-local", "status"]:
            assert "kafka: running" in output, output
        if program(text) == "dlq_producer.py" and "list" in words:
            assert f"{len(self.dlq_orders())} record(s) in {NAMES.dlq}" in output, output
        if program(text) == "dlq_producer.py" and "replay" in words:
            self.check_replay(words, output, self.orders_count() - before)
        if program(text) == "producer.py":
            count = int(option(words, "--count") or 0)
            assert output.count("Sent order: ") == count == self.orders_count() - before, output
        if program(text) == "stats.py":
            counted = self.terminals.running[1].output.count("✓ Processing successful")
            assert f"Global: count={counted} " in output and f"next_offset={self.orders_next()}" in output, (
                output
            )
        if "--reset-offsets" in words:
            assert committed_offset(BROKER, NAMES.group, NAMES.orders) == 0

    def check_replay(self, words: list[str], output: str, sent: int) -> None:
        dry_run, dlq = "--dry-run" in words, self.dlq_orders()
        samples = [
            line
            for session in captured_sessions(self.readme)
            if ("--dry-run" in session.command.split()) == dry_run
            for line in session.output
        ]
        assert samples, "the README shows no captured replay of this kind"
        assert differences(output, samples) == [], f"{' '.join(words)} printed\n{output}"
        figures = summary(output)
        if dry_run:
            assert int(figures["would_replay"]) == len(dlq) and sent == 0, output
        else:
            limit = int(option(words, "--limit") or len(dlq))
            assert int(figures["replayed"]) == sent, output
            # With step 3's consumer still running, a replayed order that fails again comes back
            # to the DLQ during the replay, which may read it too (and refuse it on its 4th time):
            # the DLQ can hold more than the replay handled, never less.
            handled = int(figures["replayed"]) + int(figures["refused"])
            assert 0 < handled <= min(limit, len(dlq)), output


def test_readme_walkthrough_runs_in_order_and_shows_what_it_says(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (logs := tmp_path / "logs").mkdir()
    clone = copy_of_repo(tmp_path / "clone")
    terminals = Terminals(clone, session_env(), logs)
    walkthrough = Walkthrough(terminals, readme)
    ran, skipped = [], {}
    try:
        for command in commands(readme):
            text = command.text.replace(README_BROKER, BROKER)
            if reason := why_not_run(text):
                skipped[command.text] = reason
                continue
            ran.append(command.text)
            stopping_the_broker = text in ("bin/kafka-local stop", "bin/kafka-local reset")
            for terminal in list(terminals.running) if stopping_the_broker else [command.terminal]:
                walkthrough.check_stopped(terminals.ctrl_c(terminal))  # "stop the scripts with Ctrl-C first"
            if not stopping_the_broker:
                walkthrough.settle()
            if text.startswith("source "):
                terminals.sourced[command.terminal].append(text)
            if runs_until_ctrl_c(text):
                walkthrough.start(command, text)
            else:
                walkthrough.run(command, text)
        for terminal in list(terminals.running):
            walkthrough.check_stopped(terminals.ctrl_c(terminal))
    finally:
        terminals.close()
        subprocess.run(
            [clone / "bin/kafka-local", "reset"], env=session_env(), capture_output=True, check=False
        )

    assert set(skipped.values()) <= {
        "no Docker engine here (the Docker lines are checked against docker-compose.yml)",
        "an example with a placeholder broker",
    }
    for must_run in (
        "kafka-local start",
        "consumer.py --exactly-once",
        "dlq_producer.py list",
        "kafka-local reset",
    ):
        assert any(must_run in command for command in ran), f"no {must_run!r} among {ran}"


def runs_until_ctrl_c(command: str) -> bool:
    words = command.split()
    if program(command) == "producer.py":
        return "--count" not in words
    return program(command) in ("consumer.py", "kafka-console-consumer") and "--idle-timeout" not in words


def order_id_in(value: bytes | str | None) -> str:
    """The orderId in an Avro value (strings are plain UTF-8 in Avro: the console consumer shows them)."""
    match = re.search(rb"ORD-[0-9A-F]+-\d+", value if isinstance(value, bytes) else b"")
    assert match, f"no orderId in DLQ record {value!r}"
    return match.group().decode()
