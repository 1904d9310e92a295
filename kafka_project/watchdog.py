"""The third Ctrl-C quits at once, even while the main thread holds the GIL and never lets go.

Python runs a signal handler only between bytecodes of the main thread, and a thread of ours runs
only when the GIL is free. A call blocked in librdkafka frees the GIL, so a thread can count the
Ctrl-Cs and exit (130). A loop in C code that keeps the GIL (decoding a record that claims 2^40
items did, for hours) frees nothing: no handler and no thread of this process runs. So a second,
tiny process reads the signal numbers that Python's C-level handler writes to the wake-up fd
(that needs no GIL), passes them on to the thread, and SIGKILLs the script if the thread has not
ended it within GRACE_S of the third Ctrl-C. Nothing more is committed either way, so whatever is
not done is delivered again next time.

Run as a script, this file is that watcher (standard library only, started with python -I -S).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

SIGNALS_TO_QUIT_NOW = 3  # Ctrl-Cs
GRACE_S = 2.0  # for the script's own thread, which exits 130, before the watcher kills it
QUITTING = b"\nquitting now, without waiting for anything in flight\n"
_keep_alive: list[socket.socket] = []  # the sockets, open for the life of the process


def quit_on_third_ctrl_c() -> None:
    """Count Ctrl-Cs from now on (once per process); the third ends the process."""
    if _keep_alive:
        return
    signals_in, signals_out = socket.socketpair()  # Python's C handler -> the watcher process
    relayed_in, relayed_out = socket.socketpair()  # the watcher -> our thread
    signals_out.setblocking(False)
    signal.set_wakeup_fd(signals_out.fileno(), warn_on_full_buffer=False)
    fds = [signals_in.fileno(), relayed_out.fileno()]
    subprocess.Popen(
        [sys.executable, "-I", "-S", __file__, *map(str, fds), str(os.getpid())],
        pass_fds=fds,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # out of the terminal's process group: its Ctrl-C is not for the watcher
    )
    signals_in.close()
    relayed_out.close()
    threading.Thread(target=exit_on_third, args=(relayed_in,), daemon=True, name="quit-on-signals").start()
    _keep_alive.extend([signals_out, relayed_in])


def exit_on_third(relayed: socket.socket) -> None:
    seen = 0
    while data := relayed.recv(64):
        seen += data.count(signal.SIGINT)
        if seen >= SIGNALS_TO_QUIT_NOW:
            os.write(2, QUITTING)
            os._exit(130)


def watch(signals_in: int, relayed_out: int, script: int) -> None:
    """The watcher's loop: relay, count, and kill the script if it does not quit by itself. Ends
    when the script does (its end of the sockets closes)."""
    seen = 0
    while data := os.read(signals_in, 64):
        try:
            os.write(relayed_out, data)
        except OSError:  # the script is gone
            return
        seen += data.count(signal.SIGINT)
        if seen >= SIGNALS_TO_QUIT_NOW:
            break
    else:
        return  # the script ended
    deadline = time.monotonic() + GRACE_S
    while (left := deadline - time.monotonic()) > 0:
        if select.select([signals_in], [], [], left)[0] and not os.read(signals_in, 64):
            return  # the script ended by itself (its end of the socket closed)
    os.write(2, b"quitting now: killed, its main thread did not answer\n")
    os.kill(script, signal.SIGKILL)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a script's SIGTERM is a clean stop: outlive it
    watch(*(int(arg) for arg in sys.argv[1:4]))
