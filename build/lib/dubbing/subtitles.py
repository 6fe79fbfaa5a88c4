"""Subtitles: SRT and WebVTT following common conventions (42 characters a line, two lines a cue,
at least one second on screen, long lines split into several cues)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dubbing.files import write_text

MAX_CHARS = 42
MAX_LINES = 2
MIN_DURATION_S = 1.0


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def make_cues(lines: Iterable[tuple[float, float, str]], duration_s: float | None = None) -> list[Cue]:
    """Wrap each (start, end, text); text too long for one cue is split, sharing the time by length.
    No cue outlasts `duration_s`, so subtitles never lengthen the media they are muxed into."""
    items = sorted(lines)
    cues: list[Cue] = []
    for i, (start, end, text) in enumerate(items):
        wrapped = textwrap.wrap(" ".join(text.split()), MAX_CHARS)
        if not wrapped:
            continue
        chunks = ["\n".join(wrapped[j : j + MAX_LINES]) for j in range(0, len(wrapped), MAX_LINES)]
        next_start = items[i + 1][0] if i + 1 < len(items) else duration_s
        stretched_end = max(end, start + MIN_DURATION_S)
        if next_start is not None:
            stretched_end = max(end, min(stretched_end, next_start))
        total = sum(len(c) for c in chunks)
        t = start
        for chunk in chunks:
            share = (stretched_end - start) * len(chunk) / total
            cues.append(Cue(round(t, 3), round(t + share, 3), chunk))
            t += share
    return cues


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(cues: list[Cue]) -> str:
    blocks = [f"{i}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n{c.text}\n" for i, c in enumerate(cues, 1)]
    return "\n".join(blocks)


def to_vtt(cues: list[Cue]) -> str:
    blocks = [f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n{c.text}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def write_subtitles(
    lines: Iterable[tuple[float, float, str]], srt: Path, vtt: Path, duration_s: float | None = None
) -> tuple[Path, Path]:
    cues = make_cues(lines, duration_s)
    return write_text(srt, to_srt(cues)), write_text(vtt, to_vtt(cues))
