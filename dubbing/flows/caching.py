"""Cache keys for stage tasks: the content of input files, the stage's config and the code version.

With results persisted, a rerun after a crash resumes at the first unfinished stage, and adding a
language leaves the finished languages' tasks cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import dubbing
from dubbing.config import Settings

_digests: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


# Modules that never change what a stage computes: editing them keeps the cache.
PRESENTATION_MODULES = {"cli.py", "batch.py", "progress.py"} | {
    f"studio/{name}.py"
    for name in ("page", "server", "session")  # the studio: no stage imports it
}


def code_version() -> str:
    """A hash of the library's source: a change to any computing module invalidates cached stage results."""
    digest = hashlib.sha256(dubbing.__version__.encode())
    package = Path(dubbing.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() not in PRESENTATION_MODULES:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


CODE_VERSION = code_version()


def file_digest(path: Path) -> str:
    """sha256 of a file's content, remembered by (path, size, mtime) within the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _digest_lock:
        if key in _digests:
            return _digests[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    with _digest_lock:
        _digests[key] = digest.hexdigest()
    return _digests[key]


def fingerprint(value: Any) -> Any:
    """A JSON-able stand-in for a task argument that changes exactly when its meaning does."""
    if isinstance(value, Path):
        return {"file": str(value), "sha256": file_digest(value)} if value.is_file() else str(value)
    if isinstance(value, Settings):  # what the video holds is read as its own value (`output`) by the steps it changes
        return value.model_dump(mode="json", exclude={"output"})
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: fingerprint(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [fingerprint(v) for v in value]
    if isinstance(value, dict):
        return {str(k): fingerprint(v) for k, v in value.items()}
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def stage_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    payload = json.dumps(
        {"task": context.task.name, "code": CODE_VERSION, "args": fingerprint(parameters)}, sort_keys=True
    )
    return f"{context.task.name}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"
