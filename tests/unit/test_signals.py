"""Ctrl-C and SIGTERM stop a script even while its main thread waits on the stop event."""

import signal
import subprocess
import sys
import time

WAITING_LOOP = """
from kafka_project.cli import stop_on_signals
stop = stop_on_signals()
print("ready", flush=True)
while not stop.is_set():
    stop.wait(0)  # the consumer's loop waits like this when a retry is due now
print("stopped", flush=True)
"""


def test_a_signal_during_stop_wait_never_deadlocks():
    """The handler runs on the main thread; had it called stop.set() itself, a signal landing while
    stop.wait() held the Event's lock would hang it (about half the runs did)."""
    for run in range(20):
        script = subprocess.Popen(
            [sys.executable, "-c", WAITING_LOOP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert script.stdout is not None and script.stdout.readline() == "ready\n"
            time.sleep(0.05)
            script.send_signal(signal.SIGTERM if run % 2 else signal.SIGINT)
            out, _ = script.communicate(timeout=5)
        finally:
            script.kill()
        assert out == "stopped\n" and script.returncode == 0, f"run {run}"
