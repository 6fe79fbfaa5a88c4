"""Progress events from long work, for whoever listens (the CLI's progress bars, Prefect artifacts).

The flow reports each step's start and end (`report`); inside a step, long work says how far it is with `advance`
or `counted` (frames, lines, seconds of audio) without knowing which step runs it or who shows it. Listeners must be
cheap and thread-safe.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
EVERY_S = 0.5  # how often a step's own progress is reported at most: a frame loop would otherwise call per frame


@dataclass(frozen=True)
class Event:
    stage: str
    fraction: float  # 0..1
    language: str | None = None
    detail: str = ""


Listener = Callable[[Event], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def report(stage: str, fraction: float, language: str | None = None, detail: str = "") -> None:
    event = Event(stage, min(max(fraction, 0.0), 1.0), language, detail)
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(event)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


_step: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar("progress_step", default=None)
_last: dict[tuple[str, str | None], float] = {}  # when each running step last reported its own progress


@contextmanager
def step(stage: str, language: str | None = None) -> Iterator[None]:
    """Run a step's work under its name: what `advance` inside it reports as."""
    token = _step.set((stage, language))
    try:
        yield
    finally:
        _step.reset(token)
        with _lock:
            _last.pop((stage, language), None)


def advance(done: float, total: float, unit: str) -> None:
    """`done` of `total` units of the running step's work (e.g. 40 of 150 lines), reported at most every
    `EVERY_S`; nothing outside a step (a stage called from a script or a test) or with no total."""
    where = _step.get()
    if where is None or total <= 0:
        return
    now = time.monotonic()
    with _lock:
        if now - _last.get(where, -EVERY_S) < EVERY_S and done < total:
            return
        _last[where] = now
    report(where[0], min(done / total, 0.99), where[1], f"{done:.0f}/{total:.0f} {unit}")


def counted(items: Iterable[T], total: float, unit: str) -> Iterator[T]:
    """`items`, reporting through `advance` how many have been taken (frames read, lines spoken)."""
    for done, item in enumerate(items, 1):
        yield item
        advance(done, total, unit)
