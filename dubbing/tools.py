"""External programs (ffmpeg, espeak-ng, apertium, rubberband): found on PATH, run with argument lists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from dubbing.errors import DubbingError


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DubbingError(f"{name} not found; install it with: apt-get install {package} (or run scripts/setup)")
    return path


def run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run without a shell; a failure becomes one line naming what was being done."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise DubbingError(f"{what} failed: {last}")
    return proc


def ffmpeg_input(path: Path) -> str:
    """A path ffmpeg cannot mistake for an option or a protocol (leading dashes, 'name:with:colons')."""
    return "file:" + str(Path(path).absolute())
