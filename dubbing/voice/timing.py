"""Timing fit: how fast each line must be spoken, and where its audio lands on the dub timeline.

Rules (issues 5 and 18): each line starts at its original start; speed up only as much as needed (never slow a
short line down to fill a long slot) and never beyond the language's maximum; borrow the silence before the next
line when that line is another speaker's or far away; a line that still does not fit at the maximum may also start
a little early, in the silence after the previous dub (at most `max_lead_s`); and when the user allows it
(`timing.slow_picture`), the picture and sound of its span are slowed down a little (at most `max_slowdown`, 10%),
and what it still needs at that limit is a hold of the picture at the span's end, which makes the dub longer by
the time added (with the switch on, no line is cut); never overlap the next line. What was done to each line is its list
of `Fit.actions`. Placement is by absolute sample index, so a long video cannot drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dubbing.tools import require_tool, run_on_samples
from dubbing.types import FIT_ACTIONS

FADE_S = 0.02
SHORTENED, BORROWED_AFTER, BORROWED_BEFORE, SPED_UP, PICTURE_SLOWED, PICTURE_HELD, CUT = (
    FIT_ACTIONS  # what fitting did to a line (types)
)
STRETCH_TOLERANCE = 0.015  # a clip within 1.5% of its target length is left alone (stretching costs quality)


@dataclass(frozen=True)
class Window:
    """Where a line may sound: from `start` to `soft_end` without borrowing, at most to `hard_end`."""

    start: float
    end: float  # the line's own slot end (the original utterance's end)
    soft_end: float  # the line's own slot, plus the following silence when borrowing it is allowed
    hard_end: float  # the next line's start (less a guard) or the end of the timeline: never crossed
    earliest: float | None = None  # the earliest start when the line does not fit otherwise (None: `start`)

    @property
    def lead_room_s(self) -> float:
        """How much earlier than its slot the line may start (the free silence before it, within the limit)."""
        return max(0.0, self.start - self.earliest) if self.earliest is not None else 0.0

    @property
    def soft_s(self) -> float:
        return max(self.soft_end - self.start, 1e-3)

    @property
    def hard_s(self) -> float:
        return max(self.hard_end - self.start, 1e-3)


@dataclass(frozen=True)
class Fit:
    speed: float  # 1.0 means natural rate
    target_s: float  # how long the clip should last after fitting
    available_s: float  # the window the clip was fitted into
    over_limit: bool  # even at the maximum speed-up the clip runs past its window
    borrowed: bool  # the clip runs past its own slot into the following silence
    lead_s: float = 0.0  # the clip starts this much before its slot (silence borrowed before it)
    slowed_s: float = 0.0  # seconds the picture's slow-down over the window adds (included in `available_s`)
    held_s: float = 0.0  # seconds the picture holds at the window's end when the slow-down's limit is not enough

    @property
    def added_s(self) -> float:
        """What the line adds to the dub's timeline (the slow-down and the hold)."""
        return round(self.slowed_s + self.held_s, 3)

    @property
    def cut_s(self) -> float:
        """How much of the clip is lost at the end (only when over the limit)."""
        return max(0.0, self.target_s - self.available_s) if self.over_limit else 0.0

    @property
    def actions(self) -> list[str]:
        """What fitting did to the line (timing's part: `track` adds "shortened")."""
        done = [(BORROWED_AFTER, self.borrowed), (BORROWED_BEFORE, self.lead_s > 0), (SPED_UP, self.speed > 1.0)]
        done += [(PICTURE_SLOWED, self.slowed_s > 0), (PICTURE_HELD, self.held_s > 0), (CUT, self.over_limit)]
        return [name for name, did in done if did]


def window_for(
    start: float,
    end: float,
    speaker: str,
    next_line: tuple[float, str] | None,
    end_of_timeline: float,
    *,
    far_gap_s: float = 0.6,
    guard_s: float = 0.05,
    previous_end: float | None = None,
    max_lead_s: float = 0.0,
) -> Window:
    """The window of one line. `next_line` is (start, speaker) of the line after it, or None for the last;
    `previous_end` is where the dub before it ends (None: nothing before), and the line may start up to
    `max_lead_s` early in the silence after it, keeping the guard."""
    earliest = None
    if max_lead_s > 0:
        floor = 0.0 if previous_end is None else previous_end + guard_s
        earliest = min(start, max(start - max_lead_s, floor))
    if next_line is None:
        return Window(start, end, end_of_timeline, end_of_timeline, earliest)
    next_start, next_speaker = next_line
    hard = max(start, next_start - min(guard_s, max(0.0, next_start - end)))  # keep a guard when there is room
    borrow = next_speaker != speaker or next_start - end >= far_gap_s
    soft = hard if borrow else min(max(end, start), hard)
    return Window(start, end, soft, hard, earliest)


def plan_speed(natural_s: float, window: Window, max_speedup: float, max_slowdown: float = 0.0) -> Fit:
    """Speed up only as much as needed: first within the soft window, then borrowing up to the hard one, then
    starting early (as little as gets the line within the maximum speed-up), then (with `max_slowdown` > 0)
    slowing the picture over the window from the clip's start to the hard end by as little as it needs, at most
    `max_slowdown` of that span (0.1: 10% slower), and what the line still needs at that limit as a hold of the
    picture at the window's end (so with the slow-down allowed, nothing is ever cut); never slow the speech down;
    without the slow-down, a line that does not fit is reported over the limit."""
    lead = 0.0
    if natural_s <= window.soft_s:
        speed, available = 1.0, window.soft_s
    elif natural_s / window.soft_s <= max_speedup:
        speed, available = natural_s / window.soft_s, window.soft_s
    elif natural_s / window.hard_s <= max_speedup or window.lead_room_s <= 0:
        speed, available = max(1.0, natural_s / window.hard_s), window.hard_s
    else:
        lead = min(window.lead_room_s, math.ceil((natural_s / max_speedup - window.hard_s) * 1000) / 1000)
        available = window.hard_s + lead
        speed = max(1.0, natural_s / available)
    over = speed > max_speedup + 1e-6
    slowed = held = 0.0
    if over and max_slowdown > 0:  # whole milliseconds: the stretch step cuts the source at these times
        needed = math.ceil((natural_s / max_speedup - available) * 1000 - 1e-6) / 1000
        slowed = max(0.0, min(needed, math.floor(available * max_slowdown * 1000) / 1000))
        held = round(max(0.0, needed - slowed), 3)  # at the limit: the rest as a hold
        available += slowed + held
        speed = max(1.0, natural_s / available)
        over = speed > max_speedup + 1e-6
    speed = round(min(speed, max_speedup), 4)
    target = natural_s / speed
    borrowed = window.start + target - lead > window.end + 1e-6
    return Fit(speed, target, available, over, borrowed, lead, slowed, held)


class RateEstimator:
    """Seconds of speech per character for one voice, learnt from the clips made so far: lets a line be
    synthesised once, at the speed it will need, instead of once to measure and again to fit."""

    def __init__(self, prior_s_per_char: float | None = None) -> None:
        self._ratios: list[float] = []
        self.prior = prior_s_per_char  # used until two clips have been measured

    def update(self, text: str, natural_s: float) -> None:
        if len(text.strip()) >= 8 and natural_s > 0:
            self._ratios.append(natural_s / len(text.strip()))

    def estimate(self, text: str) -> float | None:
        if len(self._ratios) < 2:
            return self.prior * len(text.strip()) if self.prior else None
        return float(np.median(self._ratios[-20:])) * len(text.strip())


def time_stretch(audio: np.ndarray, rate: int, tempo: float) -> np.ndarray:
    """Pitch-preserving tempo change with the rubberband CLI (R3 engine): tempo 1.1 makes it 10% shorter."""
    if abs(tempo - 1.0) < 1e-3 or len(audio) == 0:
        return audio
    binary = require_tool("rubberband", "rubberband-cli")
    command = [binary, "-q", "-3", "-T", f"{tempo:.6f}", "{in}", "{out}"]
    return run_on_samples(audio, rate, command, "time-stretching a clip (rubberband)")


def conform(audio: np.ndarray, rate: int, target_s: float) -> np.ndarray:
    """Stretch a clip to `target_s` when it misses by more than the tolerance (engine rate controls are not
    exact), then make its length exact to the sample."""
    target = int(round(target_s * rate))
    if target <= 0:
        return audio[:0]
    if abs(len(audio) / target - 1.0) > STRETCH_TOLERANCE:
        audio = time_stretch(audio, rate, len(audio) / target)
    if len(audio) > target:
        audio = audio[:target].copy()
        fade = min(int(FADE_S * rate), len(audio))
        audio[len(audio) - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return audio


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
