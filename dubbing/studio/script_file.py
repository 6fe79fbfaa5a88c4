"""A script from a subtitle file and back: `dub run --script FILE` imports an edited SRT, WebVTT or script.json as
the translation, and the studio exports a language's script as SRT.

An imported subtitle file is matched to the transcript by time: each cue goes to the spoken line (transcript
utterance) it overlaps most, or the nearest one when it overlaps none, so no text is lost; the cues of one line are
joined. A line no cue reaches is left silent. Line indexes, speakers and times stay the transcript's, so the lipsync
and QA stages see the same lines as after a translation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dubbing.errors import DubbingError
from dubbing.types import NO_SPACE_LANGUAGES, Script, ScriptLine, Transcript

SUFFIXES = (".srt", ".vtt", ".json")
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"</?[a-zA-Z][^>]*>|\{\\[^}]*\}")  # <i>, <c.yellow>, {\an8}: styling, not words


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def _seconds(h: str | None, m: str, s: str, ms: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def read_cues(path: Path) -> list[Cue]:
    """The cues of an SRT or WebVTT file (styling tags removed, a cue's lines joined by a space)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DubbingError(f"script file not found: {path}") from None
    except UnicodeDecodeError:
        raise DubbingError(f"{path}: not UTF-8 text; save the subtitles as UTF-8") from None
    cues: list[Cue] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        rows = block.strip("\n").split("\n")
        at = next((i for i, row in enumerate(rows) if "-->" in row), None)
        if at is None:
            continue  # WEBVTT header, NOTE or STYLE block, a stray number
        timing = _TIMING.match(rows[at])
        if timing is None:
            raise DubbingError(f"{path}: cannot read the cue time {rows[at].strip()!r} (expected 00:00:01,000)")
        g = timing.groups()
        start, end = _seconds(*g[:4]), _seconds(*g[4:])
        words = " ".join(_TAG.sub("", row).strip() for row in rows[at + 1 :] if row.strip())
        cues.append(Cue(start, max(end, start), words))
    if not cues:
        raise DubbingError(f"{path}: no subtitle cues found (an SRT or WebVTT file was expected)")
    return sorted(cues, key=lambda c: c.start)


def _owner(cue: Cue, lines: list[tuple[float, float]]) -> int:
    """The line a cue belongs to: most overlap, else the nearest in time."""
    overlap = [min(cue.end, end) - max(cue.start, start) for start, end in lines]
    best = max(range(len(lines)), key=lambda i: overlap[i])
    if overlap[best] > 0:
        return best
    middle = (cue.start + cue.end) / 2
    return min(range(len(lines)), key=lambda i: abs((lines[i][0] + lines[i][1]) / 2 - middle))


def script_from_cues(
    cues: list[Cue], transcript: Transcript, language: str, estimate: Callable[[str], float], name: str
) -> Script:
    """The transcript's lines spoken with the cues' text (see the module's notes); `estimate` gives each line's
    spoken length at speed 1 (the language's speech rate), `name` where the text came from."""
    utterances = transcript.utterances
    if not utterances:
        raise DubbingError("the transcript has no spoken lines to put the imported script on")
    texts: list[list[str]] = [[] for _ in utterances]
    for cue in cues:
        if cue.text:
            texts[_owner(cue, [(u.start, u.end) for u in utterances])].append(cue.text)
    sep = "" if language in NO_SPACE_LANGUAGES else " "
    lines = []
    for i, u in enumerate(utterances):
        text = sep.join(texts[i]).strip()
        slot_end = utterances[i + 1].start if i + 1 < len(utterances) else transcript.duration_s
        lines.append(
            ScriptLine(
                index=i,
                speaker=u.speaker,
                start=u.start,
                end=u.end,
                source_text=u.text,
                text=text,
                estimated_s=estimate(text),
                slot_s=round(max(slot_end - u.start, 0.0), 3),
                notes=[f"imported from {name}"] if text else [f"no cue of {name} falls on this line: silent"],
            )
        )
    return Script(source_language=transcript.language, language=language, translator=f"imported: {name}", lines=lines)


def imported_script(path: Path, transcript: Transcript, language: str, estimate: Callable[[str], float]) -> Script:
    """The script `dub run --script FILE` speaks: a script.json as it is (for this language), or an SRT/VTT file's
    cues put on the transcript's lines."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DubbingError(f"{path}: --script takes an .srt, .vtt or script .json file")
    if path.suffix.lower() == ".json":
        if not path.exists():
            raise DubbingError(f"script file not found: {path}")
        try:
            script = Script.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DubbingError(f"{path}: not a valid script ({str(exc).splitlines()[0]})") from None
        if script.language != language:
            raise DubbingError(f"{path} is a script for {script.language!r}, not {language!r}")
        return script
    return script_from_cues(read_cues(path), transcript, language, estimate, path.name)


def to_srt(script: Script) -> str:
    """The script as SRT, one cue per spoken line at its source time (what `--script` reads back line for line)."""
    from dubbing import subtitles  # the run's own SRT writer (its time stamps)

    cues = [subtitles.Cue(line.start, line.end, line.text) for line in script.lines if line.text.strip()]
    return subtitles.to_srt(cues)
