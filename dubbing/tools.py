"""External programs (ffmpeg, espeak-ng, apertium, rubberband): found on PATH, run with argument lists."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

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
        raise DubbingError(f"{what} failed: {failure_reason(proc.stderr)}")
    return proc


_STRERRORS = {os.strerror(code) for code in errno.errorcode}
_NOT_A_REASON = ("Last message repeated", "Conversion failed!")


def run_on_samples(samples: np.ndarray, rate: int, command: list[str], what: str) -> np.ndarray:
    """`samples` (float, frames or frames x channels) through a program that reads and writes WAV files:
    `command` with the placeholders "{in}" and "{out}" for the two paths; the result comes back float32, shaped
    as the input (2-D for 2-D samples)."""
    import tempfile

    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="dubbing-audio-") as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(str(src), samples, rate, subtype="FLOAT")
        run([{"{in}": str(src), "{out}": str(dst)}.get(arg, arg) for arg in command], what)
        result, _ = sf.read(str(dst), dtype="float32", always_2d=samples.ndim == 2)
    return result


def failure_reason(stderr: str) -> str:
    """The line of a program's messages that says why it failed: the last one that is not ffmpeg's "Last message
    repeated" or "Conversion failed!", and of a system error only the error ("Error closing file /x/.a.tmp.mp4: No
    space left on device" -> "No space left on device"), which is what the user acts on."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(_NOT_A_REASON)] or lines
    if not reasons:
        return "no message"
    tail = reasons[-1].rsplit(": ", 1)[-1]
    return tail if tail in _STRERRORS else reasons[-1]


def ffmpeg_input(path: Path) -> str:
    """A path ffmpeg cannot mistake for an option or a protocol (leading dashes, 'name:with:colons')."""
    return "file:" + str(Path(path).absolute())


def ffmpeg_audio_args(path: Path, rate: int, channels: int, track: int = 1) -> list[str]:
    """An ffmpeg command line reading audio stream number `track` (from 1, as `--audio-track` counts) of `path` as
    `channels` channels at `rate`; the caller adds the output format and destination."""
    return [
        require_tool("ffmpeg", "ffmpeg"), "-nostdin", "-y", "-v", "error", "-i", ffmpeg_input(path),
        "-map", f"0:a:{track - 1}", "-vn", "-ac", str(channels), "-ar", str(rate),
    ]  # fmt: skip


def decode_audio(path: Path, rate: int, track: int = 1) -> np.ndarray:
    """Audio stream `track` (the first by default) of any file ffmpeg reads, as mono float32 at `rate` (the one
    decoder for ASR, VAD, speaker embeddings and the lipsync drive)."""
    path = Path(path)
    if not path.is_file():
        raise DubbingError(f"audio not found: {path}")
    args = ffmpeg_audio_args(path, rate, channels=1, track=track)
    proc = subprocess.run([*args, "-f", "f32le", "pipe:1"], capture_output=True)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip()
        if "matches no streams" in reason:
            raise DubbingError(f"no audio stream in {path}")
        raise DubbingError(f"cannot decode audio from {path}: {failure_reason(reason)}")
    return np.frombuffer(proc.stdout, np.float32).copy()


def ffprobe(path: Path) -> tuple[dict, dict | None, dict | None]:
    """ffprobe's format, first picture stream (cover art excluded) and first audio stream of a file."""
    path = Path(path)
    proc = subprocess.run(
        [
            require_tool("ffprobe", "ffmpeg"),
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            ffmpeg_input(path),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise DubbingError(f"not a readable media file: {path}")
    data = json.loads(proc.stdout or "{}")
    streams = data.get("streams", [])
    video = next(
        (s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    return data.get("format", {}), video, audio


def display_size(video: dict) -> tuple[int, int]:
    """The size a picture stream is shown (and decoded, ffmpeg rotating it) at: the stored size, turned for a phone
    video's quarter-turn rotation (display matrix side data, or the older `rotate` tag)."""
    width, height = int(video["width"]), int(video["height"])
    rotation = next((s.get("rotation") for s in video.get("side_data_list", []) if "rotation" in s), None)
    if rotation is None:
        rotation = (video.get("tags") or {}).get("rotate")
    try:
        quarter = round(float(rotation or 0) / 90) % 2 == 1
    except (TypeError, ValueError):
        quarter = False
    return (height, width) if quarter else (width, height)
