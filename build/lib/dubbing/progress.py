"""Progress events from long work, for whoever listens (the CLI's progress bars, Prefect artifacts).

Stages call `report(...)`; they never know who shows it. Listeners must be cheap and thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


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
