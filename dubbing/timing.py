"""Timing fit: how fast each line must be spoken, and where its audio lands on the dub timeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FADE_S = 0.02


@dataclass(frozen=True)
class Fit:
    speed: float  # 1.0 means natural rate
    available_s: float  # time from the line's start to the next line's start (or the end)
    over_limit: bool  # even at the maximum speed-up the clip runs past its slot


def plan_speed(
    clip_s: float, start: float, next_start: float | None, end_of_timeline: float, max_speedup: float
) -> Fit:
    """Speed up only as much as needed to end before the next line; never slow down to fill a slot."""
    limit = next_start if next_start is not None else end_of_timeline
    available = max(limit - start, 1e-3)
    needed = clip_s / available
    speed = min(max(needed, 1.0), max_speedup)
    return Fit(speed=round(speed, 4), available_s=available, over_limit=needed > max_speedup + 1e-6)


def place_clips(clips: list[tuple[float, np.ndarray]], rate: int, duration_s: float) -> np.ndarray:
    """Lay clips on a silent timeline at their start times; a clip is cut (with a short fade) where the next
    starts, so lines never overlap and nothing drifts: each start is an absolute sample index."""
    total = int(round(duration_s * rate))
    timeline = np.zeros(total, dtype=np.float32)
    ordered = sorted(clips, key=lambda c: c[0])
    fade = int(FADE_S * rate)
    for i, (start, audio) in enumerate(ordered):
        begin = int(round(start * rate))
        stop = total if i + 1 == len(ordered) else int(round(ordered[i + 1][0] * rate))
        piece = audio[: max(0, min(len(audio), stop - begin, total - begin))].astype(np.float32).copy()
        if len(piece) < len(audio) and len(piece) > fade:
            piece[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        timeline[begin : begin + len(piece)] += piece
    return timeline
