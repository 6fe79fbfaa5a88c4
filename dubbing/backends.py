"""Named backends and the models they load.

Every stage keeps a `BACKENDS` dict and builds from it by the name its config gives (`build`). A backend class owns
its options as a pydantic model (`Options`, validated here with errors that name the key and the allowed ones) and
declares what it can do (`capabilities`), so no code outside the backend tests its name. Loaded models live in
one process-wide pool (`shared`): the stages, the language threads of a run and the videos of a batch use one
instance per model and settings instead of each loading its own, and the flow `release`s a kind of model when no
later stage of the run needs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from dubbing.errors import DubbingError

log = logging.getLogger(__name__)
T = TypeVar("T")

_pool: dict[tuple[Hashable, ...], Any] = {}
_key_locks: dict[tuple[Hashable, ...], threading.Lock] = {}
_pool_lock = threading.Lock()
_holders: Counter[str] = Counter()
loads: Counter[str] = Counter()  # models loaded so far in this process, per kind (observability and tests)


def pick(backends: Mapping[str, T], name: str, what: str) -> T:
    """The backend called `name`, or a one-line error listing the available ones."""
    try:
        return backends[name]
    except KeyError:
        raise DubbingError(f"unknown {what} backend {name!r}; available: {', '.join(backends)}") from None


class NoOptions(BaseModel):
    """The options of a backend that takes none (the base of every backend's `Options`)."""

    model_config = ConfigDict(extra="forbid")


def options_for(cls: type, options: Mapping[str, Any] | None, where: str) -> BaseModel:
    """`options` validated by the backend's own `Options` model; `where` names them in errors ('tts.options')."""
    model: type[BaseModel] = getattr(cls, "Options", NoOptions)
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        name = getattr(cls, "name", cls.__name__)
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(model.model_fields)) or "none"
            raise DubbingError(f"{where}: unknown key {key!r} for backend {name}; allowed: {allowed}") from None
        raise DubbingError(f"{where}.{key}: {err['msg']} (got {err.get('input')!r})") from None


def config_problems(
    registry: Mapping[str, type],
    name: str,
    what: str,
    options: Mapping[str, Any] | None,
    *,
    backend_key: str,
    options_key: str,
) -> list[str]:
    """What `build` would refuse in a config, as messages naming the config keys ('tts.backend', 'tts.options')
    instead of an error: for `dub doctor` and the checks before a run."""
    try:
        cls = pick(registry, name, what)
    except DubbingError as exc:
        return [f"{backend_key}: {exc}"]
    try:
        options_for(cls, options, options_key)
    except DubbingError as exc:
        return [str(exc)]
    return []


def build(
    registry: Mapping[str, type], name: str, what: str, options: Mapping[str, Any] | None = None, **context: Any
) -> Any:
    """The one backend factory: the backend called `name`, given its validated `options` (only those set) and the
    call's `context` (a language pair, a model path). `what` names the stage in errors ('TTS', 'translation')."""
    cls = pick(registry, name, what)
    given = options_for(cls, options, f"{what} options").model_dump(exclude_unset=True)
    return cls(**context, **given)


def shared_build(
    kind: str,
    registry: Mapping[str, type],
    name: str,
    what: str,
    options: Mapping[str, Any] | None = None,
    **context: Any,
) -> Any:
    """`build`, pooled (`shared`) under this kind by everything the backend is built from: the stages, language
    threads and videos of a process asking for the same backend share one loaded model."""
    key = (name, json.dumps(dict(options or {}), sort_keys=True, default=str), *sorted(context.items()))
    return shared(kind, key, lambda: build(registry, name, what, options, **context))


def capable(backend: object, capability: str) -> bool:
    """Whether a backend (class or instance) declares `capability` (e.g. TTS 'clone', 'blend', 'rate')."""
    return capability in getattr(backend, "capabilities", ())


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
        dropped = [k for k in _pool if not kinds or k[0] in kinds]
        for key in dropped:
            del _pool[key]
            _key_locks.pop(key, None)
    if dropped:  # a translate step whose translator is no LLM releases "llm" too: nothing to collect then
        gc.collect()  # a model in a reference cycle is freed now, not at some later collection
        _trim_heap()


def _trim_heap() -> None:
    """glibc keeps freed memory in its heaps; give it back to the system, so what a released model held is free for
    the steps after it (and the run's memory shows it). Nothing to do where the C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def holding(*kinds: str) -> Iterator[None]:
    """Keep the pooled models of these kinds while inside; when the last holder of a kind leaves, `release` it.
    The languages synthesized side by side share one voice model and one line-shortening LLM, and once the last
    synthesis ends their memory (the LLM alone is 1.2 GB) is free for the render and QA after it."""
    with _pool_lock:
        _holders.update(kinds)
    try:
        yield
    finally:
        with _pool_lock:
            _holders.subtract(kinds)
            idle = [kind for kind in kinds if _holders[kind] <= 0]
        if idle:
            release(*idle)
            log.debug("released the %s models: no step holds them now", ", ".join(idle))


def pooled(kind: str | None = None) -> list[tuple[Hashable, ...]]:
    """Keys of the models held now (of one kind, or all)."""
    with _pool_lock:
        return [k for k in _pool if kind is None or k[0] == kind]
