r"""Subtitles: SRT and WebVTT following common conventions (42 characters a line, two lines a cue,
at least one second on screen, long lines split into several cues).

Per language: Chinese, Japanese and Korean lines hold 18 full-width characters (36 columns; a full-width character
is two columns, as East Asian subtitle guidelines count), Chinese and Japanese broken between any two characters
(they have no spaces) but never before closing punctuation or after an opening bracket; right-to-left lines
(Arabic, Hebrew, Persian, Urdu) start with a RIGHT-TO-LEFT MARK (U+200F), so players that take a line's direction
from its first strong character (WebVTT's rule, and most SRT renderers) lay it out right to left even when it
starts with a digit or a Latin word, and its final punctuation stays on the left.

A line's text is shown literally: a `<i>` or `{\an8}` typed into script.json is text, not markup. WebVTT escapes
`&`, `<` and `>`; SRT has no escape, so a WORD JOINER (U+2060, zero width) goes after a `<` that would open a tag,
after every `{` and after a backslash before N, n or h: players, and ffmpeg converting the file into a video's
mov_text or srt track, then read no tag. libass hides any `{...}` as an override block, so the copy burned into a
picture (`burnable`) escapes `{` as `\{` instead.

Bilingual subtitles (`make_bilingual_cues`) carry the source line over the translated one in each cue.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
WORD_JOINER = "\u2060"
_SRT_MARKUP = re.compile(r"<(?=[A-Za-z/!])|\{|\\(?=[Nnh])")  # what would open a tag or an ASS escape


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

    def chunks(text: str) -> list[str]:
        wrapped = wrap(text, language)
        return ["\n".join(wrapped[j : j + MAX_LINES]) for j in range(0, len(wrapped), MAX_LINES)]

    return _timed(sorted(lines), chunks, duration_s)


def make_bilingual_cues(
    lines: Iterable[tuple[float, float, str, str]],
    duration_s: float | None = None,
    source_language: str | None = None,
    language: str | None = None,
) -> list[Cue]:
    """Cues of (start, end, source text, translated text): each holds the source line's subtitle lines over the
    translation's; a pair too long for one cue is split into as many cues as either side needs (two lines each),
    but never into more than the translation has lines, so every cue shows some of it; each side's lines are shared
    evenly among the cues. A line without translation has no cue."""

    def chunks(pair: tuple[str, str]) -> list[str]:
        source, target = wrap(pair[0], source_language), wrap(pair[1], language)
        if not target:
            return []
        count = max(-(-len(target) // MAX_LINES), min(-(-len(source) // MAX_LINES), len(target)))
        return ["\n".join(_share(source, count, i) + _share(target, count, i)) for i in range(count)]

    return _timed(sorted((start, end, (source, text)) for start, end, source, text in lines), chunks, duration_s)


def _share(items: list[str], count: int, i: int) -> list[str]:
    """The `i`-th of `count` nearly equal runs of `items`."""
    return items[len(items) * i // count : len(items) * (i + 1) // count]


def _timed(
    items: list[tuple[float, float, Any]], chunks: Callable[[Any], list[str]], duration_s: float | None
) -> list[Cue]:
    """Cues of sorted (start, end, text) items, each text cut into `chunks(text)`: a cue stays at least
    MIN_DURATION_S unless the next line starts sooner, a line's time is shared among its chunks by length, and no
    cue outlasts `duration_s`."""
    cues: list[Cue] = []
    for i, (start, end, text) in enumerate(items):
        parts = chunks(text)
        if not parts:
            continue
        next_start = items[i + 1][0] if i + 1 < len(items) else duration_s
        stretched_end = max(end, start + MIN_DURATION_S)
        if next_start is not None:
            stretched_end = max(end, min(stretched_end, next_start))
        total = sum(len(c) for c in parts)
        t = start
        for part in parts:
            share = (stretched_end - start) * len(part) / total
            cues.append(Cue(round(t, 3), round(t + share, 3), part))
            t += share
    return cues


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt_text(text: str) -> str:
    """`text` as SRT shows it literally (see the module's notes)."""
    return _SRT_MARKUP.sub(lambda m: m.group() + WORD_JOINER, text)


def vtt_text(text: str) -> str:
    """`text` as WebVTT shows it literally: its three escapes (so a `-->` in a line is no timing line either)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_srt(cues: list[Cue]) -> str:
    blocks = [
        f"{i}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n{srt_text(c.text)}\n" for i, c in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: list[Cue]) -> str:
    blocks = [f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n{vtt_text(c.text)}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def burnable(srt: Path, out: Path) -> Path:
    r"""A copy of an SRT file for libass to draw into a picture (ffmpeg's `subtitles` filter): libass takes any
    `{...}` for an override block, so every `{` (neutralised, or typed into the file by hand) becomes its escape
    `\{`; the rest is the file as written, a user's edits included."""
    text = srt.read_text(encoding="utf-8")
    return write_text(out, re.sub("\\{" + WORD_JOINER + "?", lambda _: "\\{", text))


BURN_HEIGHT = 288  # the script height libass lays an SRT out in (its default style: font size 16)
GLYPH_EM = 0.6  # the average width of a column in DejaVu Sans, libass's default font here, in font sizes


def burn_style(width: int | None, height: int | None) -> str:
    """libass's style for burning into a `width` x `height` picture (ffmpeg's `subtitles` filter `force_style`): the
    default font size, made smaller where a full line of MAX_CHARS columns would not fit the picture's width (a
    square or portrait video), so the lines break where the file breaks them."""
    size = 16.0
    if width and height:
        size = min(size, 0.92 * BURN_HEIGHT * width / height / (MAX_CHARS * GLYPH_EM))
    return f"FontSize={max(6, int(size))}"


def write_subtitles(
    lines: Iterable[tuple[float, float, str]],
    srt: Path,
    vtt: Path,
    duration_s: float | None = None,
    language: str | None = None,
) -> tuple[Path, Path]:
    return write_cues(make_cues(lines, duration_s, language), srt, vtt)


def write_cues(cues: list[Cue], srt: Path, vtt: Path) -> tuple[Path, Path]:
    """The cues as an SRT and a WebVTT file, each written atomically."""
    return write_text(srt, to_srt(cues)), write_text(vtt, to_vtt(cues))
