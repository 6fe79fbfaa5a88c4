"""Avatar expression and speed on ../shared/media; prints a markdown table (numbers for docs/lipsync.md).

  .venv/bin/python benchmarks/bench_avatar.py [--seconds 60]

A 1280x720 photo (a frame of vrt_face2.mp4 on a blurred fill of itself) speaks musetalk_eng.wav (real English
speech, one speaker). Everything is measured on the rendered video, tracked again with the face mesh:
1. Blinks: eye openness per frame (lid gap over eye width, both eyes); a blink is a dip under 3/4 of the median (the
   tracker smooths landmarks over time, so a full closure reads as a dip to about half).
   Intervals between blinks (goal: 2-10 s) and how many of the animation's own blinks the tracker saw.
2. Head motion against the voice's loudness: the speed of the head (the mean of eye corners and nose bridge,
   pixels per frame) and the audio's RMS level in dB, both smoothed over 0.25 s; Pearson r (goal >= 0.3), and
   the same r against the loudness played backwards (what chance gives on this clip).
3. Speed: frames per second of `make_avatar` (face detection, animation, rendering and encoding) at 720p, in
   wall time and from the CPU time it used (process and encoder) on this machine's 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_lipsync import print_measures  # this folder is the script's own: sys.path[0]

from dubbing.lipsync import DRIVE_RATE, load_audio, track_video
from dubbing.lipsync.avatar import animate, load_portrait, make_avatar

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"
FPS = 25.0
STABLE = [33, 133, 263, 362, 168, 6]  # eye corners and nose bridge: move with the head, not the mouth or lids
LIDS = [(159, 145, 33, 133), (386, 374, 263, 362)]  # upper lid, lower lid, corner, corner per eye


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True)


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return np.convolve(np.pad(x, radius, mode="edge"), kernel / kernel.sum(), mode="valid")


def level_db(audio: np.ndarray, frames: int) -> np.ndarray:
    """RMS level per frame in dB (the frame's own samples), floored 50 dB under the loudest frame."""
    per = DRIVE_RATE / FPS
    rms = np.array([np.sqrt(np.mean(audio[int(i * per) : int((i + 1) * per)] ** 2) + 1e-12) for i in range(frames)])
    db = 20 * np.log10(rms)
    return np.maximum(db, db.max() - 50.0)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the ffmpeg encoder): what other work on a shared
    machine does not inflate the way it inflates wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def blink_starts(openness: np.ndarray) -> np.ndarray:
    """Frames where the eyes drop under 3/4 of their median openness (the first frame of each dip)."""
    closed = openness < 0.75 * np.nanmedian(openness)
    return np.flatnonzero(closed[1:] & ~closed[:-1]) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="How much of the speech to animate.")
    args = parser.parse_args()
    if not MEDIA.is_dir():
        sys.exit(f"no test media at {MEDIA}")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        photo, speech = tmp / "photo.png", tmp / "speech.wav"
        ffmpeg("-ss", "1", "-i", str(MEDIA / "vrt_face2.mp4"), "-frames:v", "1", "-filter_complex",
               "[0:v]split[a][b];[a]scale=1280:720,boxblur=20[bg];[b]scale=720:720[fg];[bg][fg]overlay=280:0",
               str(photo))  # fmt: skip
        ffmpeg("-i", str(MEDIA / "musetalk_eng.wav"), "-t", str(args.seconds), "-ac", "1", str(speech))
        out = tmp / "avatar.mp4"
        start, cpu_start = time.perf_counter(), cpu_seconds()
        result = make_avatar(photo, speech, out, fps=FPS)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        audio = load_audio(speech)
        own = animate(load_portrait(photo), audio, FPS)  # the same seed: the motion rendered
        faces, _stream = track_video(out)
    seen = faces.ids[:, 0] >= 0
    pts = faces.points[:, 0].astype(np.float64)
    openness = np.mean(
        [np.linalg.norm(pts[:, a] - pts[:, b], axis=1) / np.linalg.norm(pts[:, c] - pts[:, d], axis=1)
         for a, b, c, d in LIDS], axis=0
    )  # fmt: skip
    openness[~seen] = np.nan
    found = blink_starts(openness)
    intervals = np.diff(found) / FPS
    planned = np.flatnonzero(np.diff((own.blink > 0.5).astype(int)) == 1) + 1 if own.blink is not None else []
    matched = sum(bool(np.any(np.abs(found - p) <= 2)) for p in planned)
    head = pts[:, STABLE].mean(axis=1)
    speed = np.r_[0.0, np.linalg.norm(np.diff(head, axis=0), axis=1)]
    n = min(len(speed), result.frames)
    loud = smooth(level_db(audio, n), 0.25 * FPS)
    moving = smooth(speed[:n], 0.25 * FPS)
    r = float(np.corrcoef(loud, moving)[0, 1])
    r_back = float(np.corrcoef(loud[::-1], moving)[0, 1])
    talking = own.drive.speech[:n]
    rows = [
        ("blinks seen in the rendered video", f"{len(found)} in {n / FPS:.0f} s",
         f"{matched} of the animation's {len(planned)} blinks found within 2 frames"),
        ("interval between blinks (goal 2-10 s)",
         f"{intervals.min():.1f}-{intervals.max():.1f} s" if intervals.size else "-",
         f"median {np.median(intervals):.1f} s, spread (sd) {np.std(intervals):.1f} s" if intervals.size else ""),
        ("blinks starting in a pause of the speech", f"{np.mean(~talking[found[found < n]]):.0%}",
         f"the speech pauses {np.mean(~talking):.0%} of the time"),
        ("head speed vs loudness, Pearson r (goal >= 0.3)", f"{r:.2f}",
         f"loudness played backwards: {r_back:.2f}; median head speed speaking / pausing "
         f"{np.median(speed[:n][talking]):.2f} / {np.median(speed[:n][~talking]):.2f} px/frame"),
        ("1280x720 avatar: detect + animate + render + encode", f"{result.frames / elapsed:.1f} fps",
         f"{result.frames} frames in {elapsed:.1f} s wall; {1000 * cpu / result.frames:.1f} CPU-ms per frame "
         f"(process and encoder): {result.frames / cpu:.0f}-{2 * result.frames / cpu:.0f} fps on 2 idle cores"),
    ]  # fmt: skip
    print_measures(rows)


if __name__ == "__main__":
    main()
