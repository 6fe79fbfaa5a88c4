"""Named backends and the models they load.

Every stage keeps a `BACKENDS` dict and picks from it by the name its config gives (`pick`). Loaded models live in
one process-wide pool (`shared`): the stages, the language threads of a run and the videos of a batch use one
instance per model and settings instead of each loading its own, and the flow `release`s a kind of model when no
later stage of the run needs it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from dubbing.errors import DubbingError

log = logging.getLogger(__name__)
T = TypeVar("T")

_pool: dict[tuple[Hashable, ...], Any] = {}
_key_locks: dict[tuple[Hashable, ...], threading.Lock] = {}
_pool_lock = threading.Lock()
loads: Counter[str] = Counter()  # models loaded so far in this process, per kind (observability and tests)


def pick(backends: dict[str, Any], name: str, what: str) -> Any:
    """The backend called `name`, or a one-line error listing the available ones."""
    try:
        return backends[name]
    except KeyError:
        raise DubbingError(f"unknown {what} backend {name!r}; available: {', '.join(backends)}") from None


def shared(kind: str, settings: tuple[Hashable, ...], load: Callable[[], T]) -> T:
    """The pooled model of this kind and settings, loaded by `load` on first use. Threads asking for the same
    model at once wait for one load instead of loading it twice."""
    key = (kind, *settings)
    with _pool_lock:
        if key in _pool:
            return _pool[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _pool_lock:
            if key in _pool:
                return _pool[key]
        started = time.perf_counter()
        model = load()
        with _pool_lock:
            _pool[key] = model
            loads[kind] += 1
    log.debug("loaded %s model %s in %.1f s", kind, settings, time.perf_counter() - started)
    return model


def release(*kinds: str) -> None:
    """Drop pooled models of these kinds (all kinds when none is named) so their memory can be reclaimed; the next
    use loads them again."""
    with _pool_lock:
        for key in [k for k in _pool if not kinds or k[0] in kinds]:
            del _pool[key]
            _key_locks.pop(key, None)


def pooled(kind: str | None = None) -> list[tuple[Hashable, ...]]:
    """Keys of the models held now (of one kind, or all)."""
    with _pool_lock:
        return [k for k in _pool if kind is None or k[0] == kind]
