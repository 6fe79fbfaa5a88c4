"""Animated and stylised faces: does the face mesh find drawn faces, and does the mouth follow the dub, with the
renderers on the tracked face and with a marked mouth box? Prints a markdown table (numbers for docs/lipsync.md).

  .venv/bin/python benchmarks/bench_cartoon.py

The faces are drawn here with OpenCV (tests/cartoons.py: a flat outlined cartoon, the same without outlines
and softly lit, an anime-like face, an emoji), each a still character with a closed mouth that blinks, 8 s at
640x480 with espeak-ng speech (three phrases, pauses between). Per style:
1. The face mesh: the share of frames with a face, and of those, how often its lip centre lies in the drawn
   mouth's box (the mesh found the mouth, not only a face).
2. The mouth against the dub, from the output's own pixels: the dark-pixel height in the mouth's box per frame
   (tests.cartoons.box_opening: lines and mouth interior) against the speech's RMS level in dB (50 ms, the
   avatar's `loudness`), Pearson r; how far it opens (95th minus 5th percentile of that height, in % of the
   mouth's width); the fine detail around the mouth (`fine_detail`: edges and grain; photographic noise on a
   flat drawing raises it, and so, less, do the opening's own edges). For the
   classical and drawn renderers on the tracked face (where the mesh finds one) and for the marked box
   (`mouth_box`, no tracking).
3. Cost: CPU ms per frame of the process (tracking excluded; decoding and encoding run in ffmpeg, not counted).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from bench_lipsync import espeak, print_measures  # this folder is the script's own: sys.path[0]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dubbing.lipsync import DRIVE_RATE, choose_active, lipsync_video, track_video  # noqa: E402
from dubbing.lipsync.avatar import loudness  # noqa: E402
from dubbing.lipsync.faces import LIP_MID_LOWER, LIP_MID_UPPER  # noqa: E402
from dubbing.lipsync.video import probe_video, read_frames  # noqa: E402
from tests.cartoons import STYLES, box_opening, cartoon_clip  # noqa: E402

SECONDS = 8.0
PHRASES = [(0.3, "hello there, my friend"), (2.8, "we are drawn, not filmed"), (5.4, "see you again soon")]


def speech(tmp: Path) -> Path:
    audio = np.zeros(int(SECONDS * DRIVE_RATE), np.float32)
    for i, (start, text) in enumerate(PHRASES):
        clip = espeak(text, tmp / f"phrase{i}.wav")
        at = int(start * DRIVE_RATE)
        audio[at : at + clip.size] = clip[: audio.size - at]
    path = tmp / "speech.wav"
    sf.write(path, audio, DRIVE_RATE)
    return path


def measure(video: Path, box: tuple[int, int, int, int], voice: np.ndarray) -> tuple[float, float, float]:
    """Pearson r of the box's mouth opening (from the pixels) and the voice's loudness; the opening's 95th
    percentile over the closed mouth's, in % of the box's width; and the lower face's `fine_detail`."""
    stream = probe_video(video)
    frames = list(read_frames(video, stream))
    opened = box_opening(frames, box)
    loud = loudness(voice, stream.fps_float, len(opened))
    r = float(np.corrcoef(opened, loud)[0, 1]) if opened.std() > 0 else float("nan")
    wide = 100 * (np.percentile(opened, 95) - np.percentile(opened, 5)) / box[2]
    return r, float(wide), fine_detail(frames, box)


def fine_detail(frames: list[np.ndarray], box: tuple[int, int, int, int]) -> float:
    """Median over frames of the mean |pixel - its 5x5 median| in grey levels around and below the mouth: a
    flat drawing scores its lines' edges only; photographic grain adds to it."""
    x, y, w, h = box
    x0, x1, y0, y1 = max(0, x - w // 2), x + w + w // 2, max(0, y - h), y + h + w
    grey = [cv2.cvtColor(f[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY) for f in frames[::5]]
    return float(np.median([np.abs(g.astype(int) - cv2.medianBlur(g, 5)).mean() for g in grey]))


def style_rows(style: str, drive: Path, voice: np.ndarray, tmp: Path) -> list[tuple[str, str, str]]:
    clip = tmp / f"{style.replace(' ', '_')}.mp4"
    box = cartoon_clip(style, drive, clip, SECONDS)
    faces, _stream = track_video(clip)
    choose_active(faces)
    present = (faces.ids >= 0).any(axis=1)
    x, y, w, h = box
    lips = [
        faces.points[t, 0, [LIP_MID_UPPER, LIP_MID_LOWER]].mean(axis=0) for t in np.flatnonzero(faces.ids[:, 0] >= 0)
    ]
    on_mouth = np.mean([x <= px <= x + w and y <= py <= y + h for px, py in lips]) if lips else 0.0
    rows = [(f"{style}: face mesh finds the face", f"{100 * present.mean():.0f}% of frames",
             f"lip centre in the drawn mouth's box in {100 * on_mouth:.0f}% of those" if lips else "")]  # fmt: skip
    rows.append(
        (f"{style}: source", "", f"fine detail {fine_detail(list(read_frames(clip, probe_video(clip))), box):.2f}")
    )
    runs = [("classical renderer", {"faces": faces}), ("drawn renderer", {"faces": faces, "backend": "drawn"})]
    for label, how in [*(runs if present.any() else []), ("marked box", {"mouth_box": box})]:
        cpu, wall = time.process_time(), time.perf_counter()
        out = lipsync_video(clip, drive, tmp / "out.mp4", **how)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        r, wide, noise = measure(out.out, box, voice)
        rows.append((f"{style}: {label}, mouth vs dub loudness r", f"{r:.2f}",
                     f"opens {wide:.0f}% of the mouth's width; fine detail {noise:.2f}; {out.animated_frames} of "
                     f"{out.frames} frames animated, {1000 * cpu / out.frames:.1f} CPU-ms per frame, "
                     f"{wall:.1f} s wall"))  # fmt: skip
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        drive = speech(tmp)
        voice, _rate = sf.read(drive, dtype="float32")
        rows = [row for style in STYLES for row in style_rows(style, drive, voice, tmp)]
    print_measures(rows, f" ({os.cpu_count()} cores shared with other work: wall times vary)")


if __name__ == "__main__":
    main()
