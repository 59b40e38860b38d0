"""Ctrl-C (or a notebook's stop button, which sends SIGINT) that waits for a safe point.

Inside `with SafeInterrupt():` the first SIGINT only sets a flag; the trainer calls `check()`
between mini-batches and steps, which raises KeyboardInterrupt there, so that no optimizer step
is ever half applied. A second SIGINT raises at once, as usual. Outside the main thread (where
Python cannot install signal handlers) it does nothing, and where SIGINT is ignored (a background
job: `make test &`, nohup) it leaves it ignored, as Python itself does at start-up. On exit it puts
back exactly the handler it found.
"""

from __future__ import annotations

import signal
import sys
import threading


class SafeInterrupt:
    """A re-entrant context manager: nested uses share the outermost handler."""

    def __init__(self):
        self.requested = False
        self._depth = 0
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:  # a second press: stop now
            raise KeyboardInterrupt
        self.requested = True
        print("\nfipo_nb: stopping at the next safe point (after this mini-batch); press again to stop at once",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "SafeInterrupt":
        if self._depth == 0:
            self.requested = False
            if threading.current_thread() is threading.main_thread() \
                    and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored stays ignored
                self._previous = signal.signal(signal.SIGINT, self._handle)
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def check(self, where: str) -> None:
        """Raise KeyboardInterrupt(where) if an interrupt was asked for."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt(f"fipo_nb: {where}")
