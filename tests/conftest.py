"""Shared fixtures: the real media in ../shared/media (skipped when absent) and generated inputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"


@pytest.fixture(scope="session")
def media_dir() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"real test media not found at {MEDIA} (a fresh clone has no ../shared/media)")
    return MEDIA


def media_file(name: str) -> Path:
    """A file from ../shared/media, or a skip with the reason."""
    path = MEDIA / name
    if not path.exists():
        pytest.skip(f"real test media {path} not present")
    return path


def make_speech(path: Path, text: str, voice: str = "en", rate_wpm: int = 160) -> Path:
    """Speech generated with espeak-ng, for inputs the shared media does not cover."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(path)], input=text.encode(), check=True)
    return path


def make_video(
    path: Path, seconds: float = 3.0, *, audio: Path | None = None, size: str = "320x240", fps: int = 25
) -> Path:
    """A test-pattern video with `audio` as its soundtrack, or with no audio stream when `audio` is None."""
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-y",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={fps}:d={seconds}",
    ]
    if audio is not None:
        cmd += ["-i", str(audio), "-shortest"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)]
    subprocess.run(cmd, check=True)
    return path
