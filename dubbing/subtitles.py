"""Subtitles: SRT and WebVTT following common conventions (42 characters a line, two lines a cue,
at least one second on screen, long lines split into several cues).

Per language: Chinese, Japanese and Korean lines hold 18 full-width characters (36 columns; a full-width character
is two columns, as East Asian subtitle guidelines count), Chinese and Japanese broken between any two characters
(they have no spaces) but never before closing punctuation or after an opening bracket; right-to-left lines
(Arabic, Hebrew, Persian, Urdu) start with a RIGHT-TO-LEFT MARK (U+200F), so players that take a line's direction
from its first strong character (WebVTT's rule, and most SRT renderers) lay it out right to left even when it
starts with a digit or a Latin word, and its final punctuation stays on the left."""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dubbing.files import write_text
from dubbing.types import NO_SPACE_LANGUAGES

MAX_CHARS = 42
MAX_LINES = 2
MIN_DURATION_S = 1.0
CJK_LANGUAGES = frozenset({"zh", "ja", "ko", "yue"})
CJK_COLUMNS = 36  # 18 full-width characters
RTL_LANGUAGES = frozenset({"ar", "he", "fa", "ur", "ps", "yi", "dv", "sd", "ug", "ckb"})
RLM = "\u200f"
NO_LINE_START = set("、。，．,.!?！？：；:;)]}）」』】〉》〕”’ー々ぁぃぅぇぉっゃゅょァィゥェォッャュョ…‥・")
NO_LINE_END = set("([{（「『【〈《〔“‘")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def _base(language: str | None) -> str:
    return (language or "").split("-")[0].split("_")[0].lower()


def width(text: str) -> int:
    """Columns a text takes on screen: two for a full-width (East Asian wide) character, one otherwise."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _wrap_characters(text: str, columns: int) -> list[str]:
    """Lines of at most `columns`, broken between any two characters (text without spaces), never putting closing
    punctuation at a line's start or an opening bracket at its end."""
    lines: list[str] = []
    line = ""
    for ch in text:
        if line and width(line + ch) > columns and ch not in NO_LINE_START:
            carry = ""
            while line and line[-1] in NO_LINE_END:
                line, carry = line[:-1], line[-1] + carry
            if line:
                lines.append(line.rstrip())
            line = carry.lstrip()
        line += ch
    if line.strip():
        lines.append(line.strip())
    return lines


def _wrap_words(text: str, columns: int) -> list[str]:
    """Lines of at most `columns` (display width), broken at spaces; a word wider than a line is broken inside."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and width(f"{line} {word}") > columns:
            lines.append(line)
            line = ""
        line = f"{line} {word}" if line else word
        while width(line) > columns:
            head = _wrap_characters(line, columns)
            lines += head[:-1]
            line = head[-1]
    if line:
        lines.append(line)
    return lines


def wrap(text: str, language: str | None = None) -> list[str]:
    """The subtitle lines of one text in `language`."""
    text, base = " ".join(text.split()), _base(language)
    if base in NO_SPACE_LANGUAGES:
        lines = _wrap_characters(text, CJK_COLUMNS)
    elif base in CJK_LANGUAGES:
        lines = _wrap_words(text, CJK_COLUMNS)
    else:
        lines = textwrap.wrap(text, MAX_CHARS)
    if base in RTL_LANGUAGES:
        lines = [RLM + line.lstrip(RLM) for line in lines]
    return lines


def make_cues(
    lines: Iterable[tuple[float, float, str]], duration_s: float | None = None, language: str | None = None
) -> list[Cue]:
    """Wrap each (start, end, text) as `language` is written (see the module's notes); text too long for one cue
    is split, sharing the time by length. No cue outlasts `duration_s`, so subtitles never lengthen the media they
    are muxed into."""
    items = sorted(lines)
    cues: list[Cue] = []
    for i, (start, end, text) in enumerate(items):
        wrapped = wrap(text, language)
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
    lines: Iterable[tuple[float, float, str]],
    srt: Path,
    vtt: Path,
    duration_s: float | None = None,
    language: str | None = None,
) -> tuple[Path, Path]:
    cues = make_cues(lines, duration_s, language)
    return write_text(srt, to_srt(cues)), write_text(vtt, to_vtt(cues))
