"""One progress display per stage: a tqdm bar on a terminal, plain log lines otherwise.

A bar redraws itself with carriage returns and cursor movements; in a log file those become
garbage, and two bars open at once fight over the same lines. So a stage opens its own
:class:`Progress` when it starts and closes it when it ends; on a terminal it is a tqdm bar,
elsewhere (a pipe, a file, CI) a plain line each time another tenth is done; when
disabled (``--no-progress``, ``--quiet``) nothing at all. The interface is tqdm's
``update``/``close``, so a stage switches from tqdm by changing one line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

LINE_STEPS = 10  # plain output: one line per tenth of the work


class Progress:
    """Progress of one stage over ``total`` units, shown as the output stream allows."""

    def __init__(
        self,
        desc: str,
        total: int,
        *,
        unit: str = "item",
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.done, self._next_line = 0, 1
        self._stream = stream or sys.stderr
        self._started = time.perf_counter()
        self._enabled = enabled and total > 0
        self._bar = None
        if self._enabled and self._stream.isatty():
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self._stream)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._enabled:
            reached = min(LINE_STEPS, self.done * LINE_STEPS // self.total)
            if reached >= self._next_line:  # one line however many tenths this step crossed
                self._line()
                self._next_line = reached + 1

    def _line(self) -> None:
        seconds = time.perf_counter() - self._started
        share = 100 * self.done // self.total
        self._stream.write(
            f"{self.desc}: {self.done}/{self.total} {self.unit} ({share}%, {seconds:.1f} s)\n"
        )
        self._stream.flush()

    def close(self) -> None:
        """End the display (a bar leaves its last state; plain output needs nothing more)."""
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
