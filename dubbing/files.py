"""Atomic file output: a reader never sees a half-written final file."""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; final files get the usual permissions
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")
"""How `atomic_path` names a file being written: `.NAME.XXXXXXXX.tmp.EXT`."""


def remove_temporaries(folder: Path) -> list[Path]:
    """The files a killed run was still writing (steps run side by side, so a kill can cut one off mid-write):
    never under a final name, and removed by the next run into the folder, which holds its lock."""
    stale = [p for p in Path(folder).rglob(".*.tmp*") if p.is_file() and TEMPORARY.match(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def remove_temporaries_of(final: Path) -> list[Path]:
    """What a killed writer of `final` left beside it (`.NAME.XXXXXXXX.tmp.EXT`, and the `.tmp.log` older versions
    kept ffmpeg's messages in): for a command that writes one file into a folder that is not a run's own, as
    `dub lipsync --out`, where a run-wide clean-up would touch the user's other files."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    own = re.compile(rf"^\.{re.escape(final.stem)}\.[a-z0-9_]{{8}}\.tmp(\.[^.]+)?$")  # as TEMPORARY, this name
    stale = [p for p in final.parent.glob(f".{glob.escape(final.stem)}.*.tmp*") if p.is_file() and own.match(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: Path, data: object) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def output_lock(lock: Path) -> Iterator[None]:
    """Refuse a second run writing into the same folder at the same time.

    An OS lock (flock) on the file `lock` (a run's `RunLayout.lock`): released when the process ends, even by
    SIGKILL, so a crashed run never leaves a stale lock behind.
    """
    import fcntl

    from dubbing.errors import DubbingError

    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise DubbingError(
                f"another run ({owner}) is writing to {lock.parent}; wait for it to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
