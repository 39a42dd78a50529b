"""Signals handled on a thread of their own, never inside whatever the main thread was doing.

A Python signal handler runs on the main thread between two bytecodes, wherever that thread
happens to be. If it logs while the main thread is halfway through writing a log line, it waits
for the logger's lock, which the main thread holds and cannot release until the handler returns:
the agent hung for good on a SIGTERM that came while it logged its 2,812th manifest file. The
same goes for any lock the handler takes (an Event's, the World's).

So the Python handlers here do nothing at all. The interpreter's own C-level handler writes each
signal's number to a pipe (``signal.set_wakeup_fd``), and a thread reading that pipe calls the
real handler, like any other thread would: it can log, set events and take locks safely.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from types import FrameType

from ipvsctl import logs

Handler = Callable[[signal.Signals], None]


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: the wakeup pipe has already carried the signal."""


@contextlib.contextmanager
def relayed(handlers: Mapping[signal.Signals, Handler]) -> Iterator[None]:
    """While inside, each signal in ``handlers`` calls its handler on the thread ``ipvsctl-signals``.

    Must be entered on the main thread (where signal dispositions can be changed). On exit the
    previous handlers and wakeup fd are back, and the thread has ended."""
    read_end, write_end = os.pipe()  # not inherited by children (PEP 446)
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, _noted) for sig in handlers}

    def relay() -> None:
        while True:
            try:
                data = os.read(read_end, 64)
            except InterruptedError:
                continue
            if not data:  # the write end is closed: we are leaving
                return
            for number in data:
                handler = handlers.get(number)  # type: ignore[call-overload]  # set_wakeup_fd sends every signal
                if handler is None:
                    continue
                try:
                    handler(signal.Signals(number))
                except Exception:  # a handler's bug must not take the next SIGTERM's handling with it
                    logs.get().exception("signal handler failed", signal=signal.Signals(number).name)

    thread = threading.Thread(target=relay, name="ipvsctl-signals", daemon=True)
    thread.start()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)
        thread.join()
        os.close(read_end)
