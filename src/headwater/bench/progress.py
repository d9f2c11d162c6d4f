"""One live progress line on stderr (a plain line per update when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    """``update(text)`` rewrites the line (at most every ``interval_s``); ``done(text)`` ends it."""

    def __init__(self, stream: IO[str] = sys.stderr, interval_s: float = 0.5) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval_s = interval_s if self.tty else 5.0
        self._last = 0.0

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        self.stream.write(f"\r\x1b[2K{text}" if self.tty else f"  .. {text}\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        self.stream.write(f"\r\x1b[2K{text}\n" if self.tty else f"{text}\n")
        self.stream.flush()
        self._last = 0.0
