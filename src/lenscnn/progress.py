"""Progress of a long loop in an app: a rich bar with a rate on a terminal, log lines otherwise.

>>> with progress("predicting", total=len(files), of="files", unit="images") as bar:
...     for batch in batches:
...         ...
...         bar.advance(len(batch), completed=files_done)

On a terminal (stdout is a tty) a transient rich progress bar shows the count, the rate
(``unit``/s), the elapsed time and, with a ``total``, the bar and the time left. When stdout is not
a terminal (a log file, ``| tee``, a batch job) no bar is drawn: a line is logged through
:mod:`logging` at most every ``every`` seconds (:data:`LOG_EVERY` unless given), so a job log
shows a steady pace without a flood.

rich is imported only when a bar is drawn.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

#: Seconds between two progress lines when stdout is not a terminal.
LOG_EVERY = 10.0

_log = logging.getLogger(__name__)
#: The clock of the rates and the pace of log lines (seconds).
clock = time.monotonic


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` of ``seconds``, rounded to the second."""
    return str(timedelta(seconds=round(seconds)))


class Tracker:
    """Counts ``unit`` items (the rate is in ``unit``/s) and, towards ``total``, a position in
    ``of`` (the same as ``unit`` unless given: e.g. files done while counting images).

    ``start`` is the position when counting began (a resumed training run's steps before it are not
    counted as done in this session's time); ``time_left`` maps the estimated seconds left to those shown
    (e.g. capped by a wall-time budget). The ``description`` may change as the work goes on."""

    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str,
        of: str | None,
        every: float,
        logger: logging.Logger,
        bar: Any = None,
        start: int = 0,
        time_left: Callable[[float], float] | None = None,
    ):
        self.description = description
        self.total = total
        self.unit = unit
        self.of = of or unit
        self.every = every
        self.logger = logger
        self.count = 0
        self.start = self.completed = start
        self.time_left = time_left
        self.lines = 0
        self._bar = bar
        self._task = None if bar is None else bar.add_task(description, total=total, count="", rate="")
        self._start = self._last = clock()

    @property
    def rate(self) -> float:
        """Items per second so far."""
        elapsed = clock() - self._start
        return self.count / elapsed if elapsed > 0 else 0.0

    def advance(self, items: int, completed: int | None = None) -> None:
        """``items`` more are done; ``completed``: the position towards ``total`` (in ``of``), by
        default the count of items."""
        self.count += items
        self.completed = self.count if completed is None else completed
        if self._bar is not None:
            position = f"{self.count:,} {self.unit}" if self.of != self.unit or self.total is None else ""
            self._bar.update(
                self._task, completed=self.completed, count=position, rate=f"{self.rate:,.0f} {self.unit}/s"
            )
            return
        now = clock()
        if now - self._last >= self.every:
            self._last = now
            self.logger.info("%s", self.line())

    def line(self) -> str:
        """``predicting: 5,000/20,000 files (25%), 5,000 images, 412 images/s, 0:00:12 elapsed, ~0:00:36 left``."""
        elapsed = clock() - self._start
        parts = []
        if self.total:
            parts.append(f"{self.completed:,}/{self.total:,} {self.of} ({100 * self.completed / self.total:.0f}%)")
        if self.total is None or self.of != self.unit:
            parts.append(f"{self.count:,} {self.unit}")
        parts += [f"{self.rate:,.0f} {self.unit}/s", f"{format_duration(elapsed)} elapsed"]
        done = self.completed - self.start
        if self.total and done > 0 and self.completed < self.total:
            left = elapsed * (self.total - self.completed) / done
            parts.append(f"~{format_duration(left if self.time_left is None else self.time_left(left))} left")
        self.lines += 1
        return f"{self.description}: {', '.join(parts)}"


def is_terminal() -> bool:
    """Whether stdout is an interactive terminal (where a live bar can be drawn)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


@contextlib.contextmanager
def progress(
    description: str,
    total: int | None = None,
    unit: str = "items",
    of: str | None = None,
    every: float | None = None,
    logger: logging.Logger | None = None,
    terminal: bool | None = None,
    console: Any = None,
) -> Iterator[Tracker]:
    """A :class:`Tracker` whose progress is drawn as a rich bar (on ``console``, by default rich's
    on stdout) on a terminal (``terminal=None``: when stdout is one), else logged to ``logger``
    at most every ``every`` seconds (:data:`LOG_EVERY` when None); after a run long enough to
    have logged, a last line with the totals."""
    every = LOG_EVERY if every is None else every
    logger = logger or _log
    if terminal is None:
        terminal = is_terminal()
    if not terminal:
        tracker = Tracker(description, total, unit, of, every, logger)
        yield tracker
        if tracker.lines:
            logger.info("%s (done)", tracker.line())
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn("[progress.description]{task.description}")]
    if total is not None:
        columns += [BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} " + (of or unit))]
    columns += [TextColumn("{task.fields[count]}"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    if total is not None:
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        yield Tracker(description, total, unit, of, every, logger, bar)
