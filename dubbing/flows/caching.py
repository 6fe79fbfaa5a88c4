"""Cache keys for stage tasks: the content of input files, the stage's config and the code version.

With results persisted, a rerun after a crash resumes at the first unfinished stage, and adding a
language leaves the finished languages' tasks cached. A whole `dub run` has a key too: when it and every file
the last complete run left are unchanged, the command has nothing to do and needs no flow run at all.
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
from dubbing.files import output_lock, write_json
from dubbing.layout import RunLayout

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


# ---- a whole run: nothing changed since the last complete one

NOT_RECORDED = {".dub.lock", "dub.log"}  # written by every run, whether or not it changes an output


def run_key(settings: Settings, command: dict[str, Any]) -> str:
    """What a `dub run` computes from: the code, every setting (output options included) and the command's
    arguments, input files by their content."""
    payload = {"code": CODE_VERSION, "settings": settings.model_dump(mode="json"), "command": fingerprint(command)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _files_left(layout: RunLayout) -> dict[str, list[int]]:
    """Every file under the output folder (but the lock, the native log and the record itself): size, mtime."""
    files: dict[str, list[int]] = {}
    for path in sorted(layout.out.rglob("*")):
        name = path.relative_to(layout.out).as_posix()
        if name in NOT_RECORDED or path == layout.run_record or not path.is_file():
            continue
        stat = path.stat()
        files[name] = [stat.st_size, stat.st_mtime_ns]
    return files


def record_run(layout: RunLayout, key: str) -> None:
    """After a run in which every language was dubbed: its key and the files it left. Skipped while another
    process writes there (its changes would be recorded as this run's)."""
    try:
        with output_lock(layout.lock):
            write_json(layout.run_record, {"key": key, "files": _files_left(layout)})
    except Exception:  # noqa: BLE001 - a record is an optimisation; without one the next run just runs
        layout.run_record.unlink(missing_ok=True)


def unchanged_run(layout: RunLayout, key: str) -> bool:
    """Whether the last complete run had this key and left the folder exactly as it is now (any edit, deletion or
    new file there, a studio edit included, means the command runs)."""
    try:
        record = json.loads(layout.run_record.read_text(encoding="utf-8"))
        with output_lock(layout.lock):  # another run writing there: not unchanged (the run then says so itself)
            return record.get("key") == key and record.get("files") == _files_left(layout)
    except Exception:  # noqa: BLE001 - no record, an unreadable one, a locked folder: run the command
        return False
