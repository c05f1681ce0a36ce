"""Progress of the long passes (blocks written, pixels sampled, k fitted, figures drawn).

The plain modules only say how far they are; whoever listens decides what to show: the Dagster
layer logs a line every few seconds into the run's log (the UI shows it while the step runs),
the CLI draws a progress bar. With no listener, tracking costs a clock read per item.

    for index, block in tracked(iter_blocks(array), "writing the geotiff", total=n_blocks):
        ...

    with heartbeat("copying into the COG layout"):   # one opaque GDAL call
        rasterio.shutil.copy(...)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: Seconds between two heartbeats of a task whose progress cannot be counted (a GDAL call).
HEARTBEAT_S = 5.0
#: Seconds between two progress lines of one task in a run's log.
LOG_EVERY_S = 5.0
#: Tasks shorter than this (seconds) leave no line in a run's log.
LOG_MIN_TASK_S = 1.0


@dataclass(frozen=True)
class Update:
    """How far one task is: ``done`` of ``total`` (None: not countable) after ``elapsed_s``."""

    task: str
    done: int
    total: int | None
    unit: str
    elapsed_s: float
    finished: bool = False

    @property
    def rate(self) -> float | None:
        """Items per second so far (None before the first second's worth of work)."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 and self.done else None

    def describe(self) -> str:
        """One line: 'writing the geotiff: 12/48 blocks (25 %), 6.1 s, 2.0 blocks/s'."""
        if self.total is None:
            return f"{self.task}: {'done' if self.finished else 'running'}, {self.elapsed_s:.1f} s"
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        rate = f", {self.rate:.1f} {self.unit}/s" if self.rate is not None else ""
        verb = "done, " if self.finished else ""
        return (
            f"{self.task}: {verb}{self.done}/{self.total} {self.unit}{share}, "
            f"{self.elapsed_s:.1f} s{rate}"
        )


Listener = Callable[[Update], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send every progress update of the passes run inside this block to ``listener``."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def _emit(update: Update) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(update)


def tracked(
    items: Iterable[T], task: str, *, total: int | None, unit: str = "blocks"
) -> Iterator[T]:
    """``items``, reporting each one as done (and the end of the task)."""
    start = time.monotonic()
    done = 0
    _emit(Update(task, 0, total, unit, 0.0))
    for item in items:
        yield item
        done += 1
        _emit(Update(task, done, total, unit, time.monotonic() - start))
    _emit(Update(task, done, total if total is not None else done, unit, _since(start), True))


@contextlib.contextmanager
def heartbeat(task: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Report ``task`` as running every ``every_s`` seconds until the block ends."""
    start = time.monotonic()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            _emit(Update(task, 0, None, "", _since(start)))

    _emit(Update(task, 0, None, "", 0.0))
    thread = threading.Thread(target=beat, name="progress-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    _emit(Update(task, 0, None, "", _since(start), True))


def _since(start: float) -> float:
    return time.monotonic() - start


class Throttled:
    """A listener that passes on at most one update per task every ``every_s`` seconds, plus
    the end of every task that took at least ``min_task_s`` (shorter ones say nothing);
    defaults :data:`LOG_EVERY_S` and :data:`LOG_MIN_TASK_S`."""

    def __init__(
        self, listener: Listener, every_s: float | None = None, min_task_s: float | None = None
    ):
        self._listener = listener
        self._every_s = LOG_EVERY_S if every_s is None else every_s
        self._min_task_s = LOG_MIN_TASK_S if min_task_s is None else min_task_s
        self._last: dict[str, float] = {}

    def __call__(self, update: Update) -> None:
        if update.finished:
            self._last.pop(update.task, None)
            if update.elapsed_s >= self._min_task_s:
                self._listener(update)
            return
        last = self._last.setdefault(update.task, update.elapsed_s)
        if update.elapsed_s - last >= self._every_s:
            self._last[update.task] = update.elapsed_s
            self._listener(update)
