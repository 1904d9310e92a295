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


GIL_HOLDING_LOOP = """
from kafka_project.cli import stop_on_signals
stop = stop_on_signals()
print("ready", flush=True)
sum(range(10**14))  # C code that never lets go of the GIL: no handler, no thread of ours runs
print("never", flush=True)
"""


def test_the_third_ctrl_c_ends_a_script_whose_main_thread_holds_the_gil():
    """Decoding a record that claimed 2^40 array items did this for hours; six SIGINTs and a
    SIGTERM did nothing, only SIGKILL ended it."""
    script = subprocess.Popen(
        [sys.executable, "-c", GIL_HOLDING_LOOP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert script.stdout is not None and script.stdout.readline() == "ready\n"
        time.sleep(0.5)  # inside sum() by now
        for _ in range(2):
            script.send_signal(signal.SIGINT)
            time.sleep(0.3)
        assert script.poll() is None  # the first two ask the main thread, which cannot answer
        script.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = script.communicate(timeout=30)
    finally:
        script.kill()
    assert time.monotonic() - started < 10
    assert script.returncode == -signal.SIGKILL
    assert "quitting now: killed, its main thread did not answer" in err
    assert "never" not in out
