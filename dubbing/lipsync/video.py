"""Frames in and out through ffmpeg pipes (rawvideo BGR), one frame at a time, so memory stays bounded.

The reader and writer keep the source's native size, frame rate and colour tags; the writer can scale
to a requested resolution and write mp4, mov, mkv or webm.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO

import cv2
import numpy as np

from dubbing.errors import DubbingError
from dubbing.files import atomic_path
from dubbing.tools import display_size, failure_reason, ffmpeg_input, ffprobe, require_tool

log = logging.getLogger(__name__)

FORMATS = {  # container -> (ffmpeg muxer, video codec args, audio codec args)
    "mp4": ("mp4", ["-c:v", "libx264"], ["-c:a", "aac", "-b:a", "192k"]),
    "mov": ("mov", ["-c:v", "libx264"], ["-c:a", "aac", "-b:a", "192k"]),
    "mkv": ("matroska", ["-c:v", "libx264"], ["-c:a", "aac", "-b:a", "192k"]),
    "webm": (
        "webm",
        ["-c:v", "libvpx-vp9", "-row-mt", "1", "-deadline", "realtime", "-cpu-used", "8"],
        ["-c:a", "libopus"],
    ),
}
COLOR_TAGS = ("color_range", "color_space", "color_transfer", "color_primaries")
_FFMPEG_COLOR_OPTION = {
    "color_range": "-color_range",
    "color_space": "-colorspace",
    "color_transfer": "-color_trc",
    "color_primaries": "-color_primaries",
}


@dataclass(frozen=True)
class VideoStream:
    """What a renderer needs to know about the picture it reads and writes back."""

    width: int
    height: int
    fps: Fraction
    frames: int  # an estimate from duration when the container does not say
    pix_fmt: str = "yuv420p"
    colors: dict[str, str] = field(default_factory=dict)

    @property
    def fps_float(self) -> float:
        return float(self.fps)


def probe_video(path: Path) -> VideoStream:
    """Size, exact frame rate, frame count and colour tags of the first video stream."""
    path = Path(path)
    if not path.is_file():
        raise DubbingError(f"input not found: {path}")
    fmt, video, _audio = ffprobe(path)
    if video is None:
        raise DubbingError(f"no video stream in {path}")
    fps = _frame_rate(video.get("avg_frame_rate"), video.get("r_frame_rate"))
    duration = float(video.get("duration") or fmt.get("duration") or 0.0)
    frames = int(round(duration * fps)) or int(video.get("nb_frames") or 0)
    colors = {k: video[k] for k in COLOR_TAGS if video.get(k) not in (None, "unknown", "reserved")}
    width, height = display_size(video)  # ffmpeg decodes a rotated phone video upright, at this size
    return VideoStream(
        width=width,
        height=height,
        fps=fps,
        frames=frames,
        pix_fmt=video.get("pix_fmt") or "yuv420p",
        colors=colors,
    )


def _frame_rate(avg: str | None, real: str | None) -> Fraction:
    """The constant rate frames are decoded at. A variable-rate file's average (e.g. 1350/61) would stretch
    its timeline, so the stream's base rate wins when it is plausible; frames are then duplicated or dropped
    by ffmpeg to keep sync."""

    def parse(value: str | None) -> Fraction | None:
        try:
            rate = Fraction(value or "0/1")
        except (ValueError, ZeroDivisionError):
            return None
        return rate if rate > 0 else None

    a, r = parse(avg), parse(real)
    if r is not None and r <= 120 and (a is None or abs(a - r) / r > 0.01):
        return r
    return a or r or Fraction(25)


def read_frames(path: Path, stream: VideoStream, start_s: float = 0.0, *, yuv: bool = False) -> Iterator[np.ndarray]:
    """Decode frames one at a time (the pipe holds at most a few): BGR (h, w, 3), or with `yuv` the planar
    I420 layout OpenCV uses (h * 3 / 2, w), which lets a renderer leave untouched pixels bit-exact."""
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    cmd = [ffmpeg, "-nostdin", "-v", "error"]
    if start_s > 0:
        cmd += ["-ss", f"{start_s:.4f}"]
    cmd += ["-i", ffmpeg_input(path), "-map", "0:v:0", "-vf", f"fps={stream.fps}", "-fps_mode", "passthrough"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "yuv420p" if yuv else "bgr24", "pipe:1"]
    shape = (stream.height * 3 // 2, stream.width) if yuv else (stream.height, stream.width, 3)
    size = int(np.prod(shape))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=size)
    assert proc.stdout is not None
    try:
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            yield np.frombuffer(buf, np.uint8).reshape(shape)
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def read_frames_at(path: Path, stream: VideoStream, indices: list[int]) -> dict[int, np.ndarray]:
    """Several frames by index (BGR), in one decoding pass that keeps only those frames."""
    wanted = sorted({int(i) for i in indices if i >= 0})
    if not wanted:
        return {}
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    select = "+".join(f"eq(n,{i})" for i in wanted)
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", ffmpeg_input(path), "-map", "0:v:0"]
    cmd += ["-vf", f"fps={stream.fps},select='{select}'", "-fps_mode", "passthrough"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True)
    size = stream.width * stream.height * 3
    if proc.returncode != 0:
        raise DubbingError(f"reading frames of {path} failed: {failure_reason(proc.stderr.decode(errors='replace'))}")
    count = len(proc.stdout) // size
    frames = np.frombuffer(proc.stdout[: count * size], np.uint8).reshape(count, stream.height, stream.width, 3)
    return {i: frames[k] for k, i in enumerate(wanted[:count])}


def parse_resolution(value: str | None, width: int, height: int) -> tuple[int, int]:
    """'720p' (short side, keeps orientation), 'WxH', or None (native). Even sizes, for yuv420p."""
    if not value:
        return width, height
    value = value.strip().lower()
    if m := re.fullmatch(r"(\d+)p", value):
        short = int(m.group(1))
        scale = short / min(width, height)
    elif m := re.fullmatch(r"(\d+)x(\d+)", value):
        return _even(int(m.group(1))), _even(int(m.group(2)))
    else:
        raise DubbingError(f"bad resolution {value!r}; use e.g. 720p, 1080p or 1280x720")
    if short < 16 or short > 4320:
        raise DubbingError(f"resolution {value!r} out of range (16p to 4320p)")
    return _even(round(width * scale)), _even(round(height * scale))


def yuv_supported(stream: VideoStream) -> bool:
    """The I420 path needs even sizes."""
    return stream.width % 2 == 0 and stream.height % 2 == 0


def pixels_differ(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per pixel of two (H, W, 3) images, whether any channel differs: as np.any(before != after, axis=2), whose
    reduction over the 3-long last axis is about 8 times slower (a render step calls this on every frame)."""
    ne = before != after
    return ne[..., 0] | ne[..., 1] | ne[..., 2]


def changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int] | None:
    """The even-aligned box (x0, y0, x1, y1) holding every pixel that differs, or None. Rows are found over
    whole contiguous rows and columns only within them: 25 times faster on a frame than by pixel."""
    ne = before != after
    rows = np.flatnonzero(ne.reshape(len(ne), -1).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(ne[rows[0] : rows[-1] + 1].any(axis=0).any(axis=1))
    return int(cols[0]) & ~1, int(rows[0]) & ~1, (int(cols[-1]) + 2) & ~1, (int(rows[-1]) + 2) & ~1


def yuv_crop_bgr(yuv: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The even-aligned `box` of an I420 frame as BGR (converting only that region)."""
    x0, y0, x1, y1 = box
    h, w = yuv.shape[0] * 2 // 3, yuv.shape[1]
    flat = yuv.reshape(-1)
    u = flat[h * w : h * w * 5 // 4].reshape(h // 2, w // 2)[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    v = flat[h * w * 5 // 4 :].reshape(h // 2, w // 2)[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    planar = np.concatenate([yuv[y0:y1, x0:x1].ravel(), u.ravel(), v.ravel()]).reshape((y1 - y0) * 3 // 2, x1 - x0)
    return cv2.cvtColor(planar, cv2.COLOR_YUV2BGR_I420)


def patch_yuv(yuv: np.ndarray, patch: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """A copy of the I420 frame `yuv` with the BGR `patch` (even size, at even x0, y0) converted in;
    every pixel outside it stays bit-exact."""
    h, w = yuv.shape[0] * 2 // 3, yuv.shape[1]
    ph, pw = patch.shape[:2]
    part = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_BGR2YUV_I420).reshape(-1)
    out = yuv.copy()
    flat = out.reshape(-1)
    out[y0 : y0 + ph, x0 : x0 + pw] = part[: pw * ph].reshape(ph, pw)
    for plane in range(2):  # U then V, each (h/2, w/2) stored after Y
        src = part[pw * ph + plane * (pw * ph // 4) :][: pw * ph // 4].reshape(ph // 2, pw // 2)
        dst = flat[h * w + plane * (h * w // 4) :][: h * w // 4].reshape(h // 2, w // 2)
        dst[y0 // 2 : y0 // 2 + ph // 2, x0 // 2 : x0 // 2 + pw // 2] = src
    return out


def _even(n: int) -> int:
    return max(2, n - n % 2)


def check_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise DubbingError(f"unknown output format {fmt!r}; available: {', '.join(FORMATS)}")
    return fmt


class FrameWriter:
    """Encode BGR frames written one by one; optional audio is muxed in the same pass. Atomic output."""

    def __init__(
        self,
        out: Path,
        stream: VideoStream,
        *,
        audio: Path | None = None,
        audio_track: int = 1,
        audio_offset_s: float = 0.0,
        fmt: str = "mp4",
        resolution: str | None = None,
        crf: int = 17,
        preset: str = "superfast",
        duration_s: float | None = None,
        yuv: bool = False,
    ) -> None:
        self.out = Path(out)
        self.yuv = yuv  # frames come as I420 planes (see read_frames)
        self.stream = stream
        self.fmt = check_format(fmt)
        # Always 8-bit 4:2:0, what every browser and player decodes (a 10-bit or 4:4:4 source would otherwise give
        # High 10 or High 4:4:4 H.264). 4:2:0 needs even sizes: an odd native size gets one more row or column,
        # a copy of the edge (641x359 is written 642x360), so no pixel of the picture is lost or resampled.
        self.pix_fmt = "yuv420p"
        size = parse_resolution(resolution, stream.width, stream.height)
        self.size = (size[0] + size[0] % 2, size[1] + size[1] % 2)
        if self.size != size:
            log.warning(
                "%dx%d is odd; %s is written %dx%d (the edge pixel repeated), as 8-bit 4:2:0 video needs even sizes",
                *size,
                self.out.name,
                *self.size,
            )
        self.scaled = size  # before the odd size's extra row or column
        self.audio = audio
        self.audio_track = audio_track  # from 1
        self.audio_offset_s = audio_offset_s
        self.crf = crf
        self.preset = preset
        self.duration_s = duration_s
        self.frames = 0
        self._atomic = atomic_path(self.out)
        self._proc: subprocess.Popen | None = None

    def _command(self, tmp: Path) -> list[str]:
        ffmpeg = require_tool("ffmpeg", "ffmpeg")
        s = self.stream
        muxer, vcodec, acodec = FORMATS[self.fmt]
        cmd = [
            ffmpeg,
            "-nostdin",
            "-y",
            "-v",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p" if self.yuv else "bgr24",
        ]
        cmd += ["-s", f"{s.width}x{s.height}", "-framerate", str(s.fps), "-i", "pipe:0"]
        if self.audio is not None:
            if self.audio_offset_s < 0:
                cmd += ["-ss", f"{-self.audio_offset_s:.3f}"]
            cmd += ["-i", ffmpeg_input(self.audio), "-map", "0:v:0", "-map", f"1:a:{self.audio_track - 1}", *acodec]
            if self.audio_offset_s > 0:
                cmd += ["-af", f"adelay={int(round(self.audio_offset_s * 1000))}:all=1"]
        wanted = self.scaled
        grown = (self.size[0] - wanted[0], self.size[1] - wanted[1])  # one row or column for an odd size
        filters = [] if wanted == (s.width, s.height) else [f"scale={wanted[0]}:{wanted[1]}:flags=lanczos"]
        if any(grown):
            filters += [f"pad={self.size[0]}:{self.size[1]}:0:0", f"fillborders=right={grown[0]}:bottom={grown[1]}"]
            filters[-1] += ":mode=smear"
        if filters:
            cmd += ["-vf", ",".join(filters)]
        cmd += vcodec
        if vcodec[1] == "libx264":
            cmd += ["-preset", self.preset, "-crf", str(self.crf)]
        else:
            cmd += ["-crf", str(self.crf + 13), "-b:v", "0"]
        cmd += ["-pix_fmt", self.pix_fmt]
        for tag, value in s.colors.items():
            cmd += [_FFMPEG_COLOR_OPTION[tag], value]
        if self.duration_s is not None:
            cmd += ["-t", f"{self.duration_s:.3f}"]
        if muxer in ("mp4", "mov"):
            cmd += ["-movflags", "+faststart"]
        return cmd + ["-f", muxer, str(tmp)]

    def __enter__(self) -> FrameWriter:
        tmp = self._atomic.__enter__()
        # ffmpeg's messages are kept in memory, never in a file beside the output: on a full disk that file
        # stays empty ("no message" where ffmpeg said "No space left on device"), and a killed run left it behind.
        self._proc = subprocess.Popen(self._command(tmp), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._messages: deque[str] = deque(maxlen=50)
        self._reader = threading.Thread(target=self._read_messages, args=(self._proc.stderr,), daemon=True)
        self._reader.start()
        return self

    def _read_messages(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            self._messages.append(line.decode(errors="replace"))

    def write(self, frame: np.ndarray) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except BrokenPipeError:
            self._proc.wait()
            raise DubbingError(f"ffmpeg stopped while writing {self.out}: {self._error()}") from None
        self.frames += 1

    def _error(self) -> str:
        """Why ffmpeg failed, once it has ended and its messages are all read."""
        self._reader.join(timeout=10)
        return failure_reason("".join(self._messages))

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self._proc.wait()
        message = self._error()
        if exc_type is None and (code != 0 or self.frames == 0):
            err = DubbingError(f"encoding {self.out} failed: {message if code else 'no frames'}")
            self._atomic.__exit__(DubbingError, err, None)
            raise err
        self._atomic.__exit__(exc_type, exc, tb)
