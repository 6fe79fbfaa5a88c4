"""QA stage: measures a finished dub so a person knows where to look before publishing it.

Checks, per language: intelligibility (the dub voice transcribed back by the ASR stage, scored against the
script with a word or character error rate), timing (speed factors, lines that did not fit), voice match
(CAM++ similarity of each dubbed speaker to the source speaker), lipsync (how well the picture's mouth opening
follows the dub audio, and frames with no face), loudness (EBU R128 integrated loudness and true peak), meaning
(what was heard, translated back to the source language, chrF against the source line), words of another language
in the script (wordfreq word lists) and the warnings about the input. Every line failing a threshold becomes a
`QAFlag` with its time.

QA reads a finished language from its files alone (`quality_report`), so `dub eval` recomputes exactly what the
run wrote. It never imports another stage: hearing the dub back (ASR), measuring mouth opening (face tracking),
reading the mouths the lipsync renderer drew and translating what was heard back (a translation backend) are
callables the step layer passes in (`Hear`, `Mouth`, `Drawn`, `TranslateBack`). Backends here are the error-rate
metrics (`wer`, `cer`: Chinese, Japanese, Thai... have no spaces to count words by; the language's config names
one) and the loudness meter (ffmpeg's `ebur128`).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import TypeAdapter

from dubbing import media, speaker_embedding
from dubbing.config import QAConfig
from dubbing.errors import DubbingError
from dubbing.layout import RunLayout
from dubbing.tools import ffmpeg_input, require_tool, run
from dubbing.types import (
    ANALYSIS_RATE,
    FIT_ACTIONS,
    NO_SPACE_LANGUAGES,
    FaceTracks,
    LanguageOutputs,
    LineQA,
    QAFlag,
    QAReport,
    Script,
    ScriptLine,
    Transcript,
    Utterance,
    VoiceMatch,
)

HEARD_TOLERANCE_S = 0.3  # a heard word this close to a line's dub still belongs to it
LISTEN_MAX_S = 10.0  # consecutive lines heard together up to this long (whisper base looped on 20 s pieces)
LISTEN_PAD_S = 0.2  # the piece around its lines' dub
LAG_FRAMES = 6  # mouth/audio lags searched each way (about 0.2 s at 30 fps)


@dataclass(frozen=True)
class Thresholds:
    """What fails a check (the defaults are QAConfig's)."""

    max_error_rate: float = 0.5
    min_similarity: float = 0.4
    min_lip_sync: float = 0.2
    loudness_target: float = -16.0
    loudness_tolerance_lu: float = 2.0
    max_true_peak_db: float = -1.0
    max_speedup: float = 1.25
    min_meaning_chrf: float = 25.0

    @classmethod
    def from_config(cls, cfg: QAConfig, *, loudness_target: float, max_speedup: float) -> Thresholds:
        """The run's thresholds: QA's own from `cfg`, the loudness target from the mix and the speed limit from the
        language's timing (they are those stages' settings, QA only checks them)."""
        return cls(
            max_error_rate=cfg.max_error_rate,
            min_similarity=cfg.min_similarity,
            min_lip_sync=cfg.min_lip_sync,
            loudness_target=loudness_target,
            loudness_tolerance_lu=cfg.loudness_tolerance_lu,
            max_true_peak_db=cfg.max_true_peak_db,
            max_speedup=max_speedup,
            min_meaning_chrf=cfg.min_meaning_chrf,
        )


Hear = Callable[[Path, str, list[tuple[float, float]]], Transcript]
"""ASR of pieces of an audio file in a language (the step layer's transcriber): each (start, end) piece heard on
its own, in one call (batched where the backend can), utterances with word times on the file's own timeline and
nothing outside the pieces. QA chooses the pieces (`listening_pieces`: the dub's lines, not the silence between)."""

Mouth = Callable[[Path | None, Path | None], tuple[np.ndarray, float]]
"""(video, faces_npz) -> per-frame inner-lip gap (NaN where no face) and fps, of the face the lipsync stage would
animate: tracked from the video's pixels when `video` is given, else read from already tracked landmarks."""

Drawn = Callable[[Path], tuple[np.ndarray, float, str]]
"""picture -> per-frame inner-lip gap (NaN where no face), fps and renderer name, of the mouths the lipsync stage
drew into that picture, as it saved them when rendering. Raises DubbingError saying why there is nothing usable
(an older run, a renderer that does not report what it drew): QA then tracks the picture's pixels (`Mouth`)."""

TranslateBack = Callable[[list[str]], list[str]]
"""Lines of the dub's language translated into the source language, one out for each in (the step layer's
back-translator, `qa.meaning_backend`); called once with every line, since an LLM is slow per call. It may raise
DubbingError (no such pair, no model): the meaning check is then skipped with the reason in the report."""


# ---------------------------------------------------------------- error-rate metrics (backends)


class ErrorRate(Protocol):
    name: str

    def score(self, references: Sequence[str], hypotheses: Sequence[str]) -> float:
        """Corpus error rate of `hypotheses` against `references` (normalised text, pairwise)."""
        ...


def normalise(text: str) -> str:
    """Lower case, punctuation and symbols dropped (apostrophes inside words kept), spaces collapsed: what
    is compared is the words, not how the translation or the ASR punctuated them."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    kept = "".join(ch if not unicodedata.category(ch).startswith(("P", "S")) or ch == "'" else " " for ch in text)
    return re.sub(r"\s+", " ", re.sub(r"(?<!\w)'|'(?!\w)", " ", kept)).strip()


class WordErrorRate:
    name = "wer"

    def score(self, references: Sequence[str], hypotheses: Sequence[str]) -> float:
        return _jiwer_rate("wer", references, hypotheses)


class CharErrorRate:
    """For languages written without spaces between words."""

    name = "cer"

    def score(self, references: Sequence[str], hypotheses: Sequence[str]) -> float:
        return _jiwer_rate("cer", [r.replace(" ", "") for r in references], [h.replace(" ", "") for h in hypotheses])


def _jiwer_rate(kind: str, references: Sequence[str], hypotheses: Sequence[str]) -> float:
    import jiwer

    pairs = [(normalise(r), normalise(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]  # nothing to say: no error to count
    if not pairs:
        return 0.0
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    if kind == "cer":
        return float(jiwer.cer(refs, hyps))
    return float(jiwer.wer(refs, hyps))


BACKENDS: dict[str, type] = {"wer": WordErrorRate, "cer": CharErrorRate}


def get_metric(name: str) -> ErrorRate:
    """The error-rate metric called `name` (a language's `metric` in config: 'wer' or 'cer')."""
    try:
        return BACKENDS[name]()
    except KeyError:
        raise DubbingError(f"unknown QA error-rate metric {name!r}; available: {', '.join(BACKENDS)}") from None


# ---------------------------------------------------------------- per-line helpers


def dub_span(line: ScriptLine) -> tuple[float, float]:
    """Where the line's dub sounds on the timeline: from its start for its synthesised length, never past the
    end the fit allowed."""
    start = line.dub_start if line.dub_start is not None else line.start  # earlier when it borrowed silence
    length = line.synth_s if line.synth_s is not None else line.end - line.start
    end = start + max(length, 0.0)
    if line.fit_end is not None:
        end = min(end, max(line.fit_end, start))
    return start, round(end, 3)


def over_limit(line: ScriptLine, max_speedup: float) -> bool:
    """The line needed more than the allowed speed-up to fit, so its end was cut: as the synthesis step marked it,
    or as its fit shows (a script written before the mark, or a limit lowered since)."""
    if line.over_limit:
        return True
    start = dub_span(line)[0]  # a line that borrowed the silence before it had that much more room
    if line.natural_s and line.fit_end is not None and line.fit_end > start:
        return line.natural_s / (line.fit_end - start) > max_speedup + 1e-3
    return False


def fit_actions(line: ScriptLine, max_speedup: float) -> list[str]:
    """What fitting did to the line (FIT_ACTIONS), "cut" included whenever it is over the limit (a script written
    before the voice stage recorded its actions still says so)."""
    done = list(line.fit)
    if over_limit(line, max_speedup) and "cut" not in done:
        done.append("cut")
    return done


def heard_per_line(lines: Sequence[ScriptLine], heard: Transcript) -> tuple[dict[int, str], list[str]]:
    """Each back-transcribed word goes to the line whose dub span holds its midpoint (or is nearest, within a
    tolerance); words near no line are returned apart (speech the script does not have)."""
    spans = {line.index: dub_span(line) for line in lines if line.text.strip()}
    words: dict[int, list[str]] = {i: [] for i in spans}
    stray: list[str] = []
    for utterance in heard.utterances:
        for word in utterance.words or []:
            mid = (word.start + word.end) / 2
            best, distance = None, HEARD_TOLERANCE_S
            for index, (a, b) in spans.items():
                d = 0.0 if a <= mid <= b else min(abs(mid - a), abs(mid - b))
                if d <= distance:
                    best, distance = index, d
            (words[best] if best is not None else stray).append(word.word)
    sep = "" if heard.language in NO_SPACE_LANGUAGES else " "
    return {i: sep.join(w).strip() for i, w in words.items()}, stray


def listening_windows(lines: Sequence[ScriptLine], duration_s: float, max_s: float = 20.0) -> list[tuple[float, float]]:
    """The dub timeline in windows, each heard on its own (`listening_pieces` trims them to their lines):
    consecutive lines grouped up to `max_s`, each window cut halfway through the silence before and after it.
    Whisper's long-form decoding skipped whole lines of a 10-minute dub that it heard perfectly in short pieces."""
    spans = sorted(dub_span(line) for line in lines if line.text.strip())
    groups: list[list[float]] = []
    for start, end in spans:
        if groups and end - groups[-1][0] <= max_s:
            groups[-1][1] = max(groups[-1][1], end)
        else:
            groups.append([start, end])
    cuts = [0.0] + [(a[1] + b[0]) / 2 for a, b in zip(groups, groups[1:], strict=False)] + [duration_s]
    return [(round(cuts[i], 3), round(cuts[i + 1], 3)) for i in range(len(groups))]


# ---------------------------------------------------------------- wrong-language words

RELATED_LANGUAGES: dict[str, tuple[str, ...]] = {
    # the languages a translator (or an LLM) slips into when writing this one: close relatives first
    "es": ("pt", "it", "fr", "ca"),
    "pt": ("es", "it", "fr", "ca"),
    "fr": ("es", "it", "pt", "ca"),
    "it": ("es", "pt", "fr", "ca"),
    "ca": ("es", "fr", "it", "pt"),
    "ro": ("it", "es", "fr", "pt"),
    "de": ("nl", "en", "sv", "da"),
    "nl": ("de", "en"),
    "sv": ("nb", "da", "de"),
    "nb": ("sv", "da", "de"),
    "da": ("nb", "sv", "de"),
    "pl": ("cs", "sk", "de"),
    "cs": ("sk", "pl", "de"),
    "sk": ("cs", "pl"),
    "ru": ("uk", "bg"),
    "uk": ("ru", "bg"),
    "bg": ("ru", "mk"),
}
OTHER_LANGUAGES = ("en", "es", "fr", "de", "it", "pt")  # for a language with no relatives listed
UNKNOWN_ZIPF = 1.0  # a word rarer than this in the target's word list is unknown there (zipf: log10 per 10^9 words)
COMMON_ZIPF = 2.0  # ... and flagged when at least this common in another language ("flaquezas": es 2.15)
ENDING_WORDS_ZIPF = 2.0  # the words whose endings are counted, per language (the lists' rare tail is noisy)
ENDING_MIN_WORDS = 20  # an ending is another language's when that many of its words end so ...
ENDING_RATIO = 10.0  # ... and it is this many times more frequent there (share of the list) than in the target
ENDING_LETTERS = 4
MIN_LETTERS = 3  # shorter words are shared by too many languages to tell
SENTENCE_END = re.compile(r"[.!?…:;\n]\W*$")
WORD = re.compile(r"\w+(?:['’]\w+)*")
SCRIPT_CHECK_LANGUAGES = NO_SPACE_LANGUAGES | {"ko"}  # checked for Latin-script words only (see foreign_words)


@dataclass(frozen=True)
class ForeignWord:
    """A word of a line that belongs to another language, and why it was taken for one."""

    word: str
    language: str
    reason: str  # "common in pt (zipf 3.1), unknown in es" or "ending -guei: pt"


def word_list_languages() -> set[str]:
    import wordfreq

    return set(wordfreq.available_languages())


def candidate_languages(language: str, source: str | None = None) -> tuple[str, ...]:
    """The languages a `language` line is checked against: its relatives (or a few widely used ones), English and
    the source language (a word left untranslated), those with a word list."""
    wanted = (*RELATED_LANGUAGES.get(language, OTHER_LANGUAGES), "en", *((source,) if source else ()))
    have = word_list_languages()
    return tuple(dict.fromkeys(x for x in wanted if x != language and x in have))


@functools.lru_cache(maxsize=32)
def _endings(language: str) -> tuple[dict[str, int], int]:
    """How many of a language's words (zipf >= ENDING_WORDS_ZIPF, letters only) end in each ENDING_LETTERS."""
    from wordfreq import get_frequency_dict

    floor = 10 ** (ENDING_WORDS_ZIPF - 9)
    counts: dict[str, int] = {}
    total = 0
    for word, frequency in get_frequency_dict(language).items():
        if frequency >= floor and word.isalpha() and len(word) > ENDING_LETTERS:
            total += 1
            counts[word[-ENDING_LETTERS:]] = counts.get(word[-ENDING_LETTERS:], 0) + 1
    return counts, max(total, 1)


def wrong_language_check(language: str) -> str | None:
    """Why `language` cannot have its words checked (None: it can)."""
    if language in SCRIPT_CHECK_LANGUAGES:
        return None  # checked for Latin-script words left untranslated instead (foreign_words)
    if language not in word_list_languages():
        return f"no word list for {language} (wordfreq)"
    return None


def foreign_words(
    text: str, language: str, *, source: str | None = None, keep: Collection[str] = ()
) -> list[ForeignWord]:
    """The words of `text` (a line in `language`) that belong to another language: unknown in `language`'s word
    list (wordfreq zipf < UNKNOWN_ZIPF) and common (>= COMMON_ZIPF) in a candidate language, or, known nowhere,
    with an ending that many of a candidate's words have and almost none of `language`'s ("perseguei": -guei is
    Portuguese). Names (capitalised inside a sentence, all capitals), `keep` (the glossary's terms), words with
    digits and words under MIN_LETTERS letters are never flagged. A language written without spaces (zh, ja, ko,
    th...) is checked for Latin-script words common in English or the source language instead: text left
    untranslated. Empty for a language wordfreq has no list of."""
    from wordfreq import zipf_frequency

    kept = {k.casefold() for term in keep for k in WORD.findall(term)}
    no_spaces = language in SCRIPT_CHECK_LANGUAGES
    if not no_spaces and language not in word_list_languages():
        return []
    others = (
        candidate_languages(language, source)
        if not no_spaces
        else tuple(dict.fromkeys(x for x in ("en", source) if x and x in word_list_languages()))
    )
    found: list[ForeignWord] = []
    for match in WORD.finditer(text):
        token = match.group()
        if any(ch.isdigit() or ch == "_" for ch in token) or token.casefold() in kept:
            continue
        letters = [ch for ch in token if ch.isalpha()]
        if len(letters) < MIN_LETTERS:
            continue
        starts_sentence = not text[: match.start()].strip() or bool(SENTENCE_END.search(text[: match.start()]))
        if token.isupper() or any(ch.isupper() for ch in token[1:]) or (token[0].isupper() and not starts_sentence):
            continue  # an acronym, a brand (iPhone) or a name
        word = token.casefold()
        if no_spaces:
            if not all("LATIN" in unicodedata.name(ch, "") for ch in letters):
                continue
            best = max(others, key=lambda x: zipf_frequency(word, x), default=None)
            if best and (z := zipf_frequency(word, best)) >= COMMON_ZIPF + 1:
                found.append(ForeignWord(token, best, f"Latin-script word common in {best} (zipf {z:.1f})"))
            continue
        own = zipf_frequency(word, language)
        if own >= UNKNOWN_ZIPF:
            continue
        scores = {x: zipf_frequency(word, x) for x in others}
        best = max(scores, key=scores.__getitem__, default=None)
        if best is not None and scores[best] >= COMMON_ZIPF:
            found.append(ForeignWord(token, best, f"common in {best} (zipf {scores[best]:.1f}), unknown in {language}"))
            continue
        if "'" in word or "’" in word or len(word) < ENDING_LETTERS + 2 or not word.isalpha():
            continue
        ending = word[-ENDING_LETTERS:]
        own_counts, own_total = _endings(language)
        own_share = (own_counts.get(ending, 0) + 1) / own_total
        for other in others:
            counts, total = _endings(other)
            if counts.get(ending, 0) >= ENDING_MIN_WORDS and counts[ending] / total >= ENDING_RATIO * own_share:
                found.append(
                    ForeignWord(
                        token,
                        other,
                        f"unknown in {language}; -{ending} ends {counts[ending]} {other} words, "
                        f"{own_counts.get(ending, 0)} {language} ones",
                    )
                )
                break
    return found


# ---------------------------------------------------------------- checks


def intelligibility(lines: Sequence[ScriptLine], heard: Transcript, metric: ErrorRate) -> tuple[dict, dict[int, dict]]:
    """Error rate of the back-transcribed dub against the script: over the whole dub, and per line."""
    per_line_text, stray = heard_per_line(lines, heard)
    spoken = [line for line in lines if line.text.strip()]
    whole = metric.score([" ".join(line.text for line in spoken)], [" ".join(u.text for u in heard.utterances)])
    per_line = {
        line.index: {
            "heard": per_line_text.get(line.index, ""),
            "error_rate": metric.score([line.text], [per_line_text.get(line.index, "")]),
        }
        for line in spoken
    }
    summary = {
        "metric": metric.name,
        "error_rate": round(whole, 4),
        "heard": " ".join(u.text.strip() for u in heard.utterances),
        "unmatched_words": stray,
    }
    return summary, per_line


def meaning(lines: Sequence[ScriptLine], back: dict[int, str], *, basis: str) -> tuple[dict, dict[int, float]]:
    """chrF (sacrebleu's sentence chrF, 0-100, on normalised text) of each line's back-translation against its
    source line, and their mean: how much of the source's meaning the dub kept. `basis` says what was translated
    back (the dub heard back, or the script)."""
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    per_line = {
        line.index: round(chrf.sentence_score(normalise(back[line.index]), [normalise(line.source_text)]).score, 2)
        for line in lines
        if line.index in back and back[line.index].strip() and line.source_text.strip()
    }
    summary = {
        "metric": "chrf",
        "basis": basis,
        "mean_chrf": round(float(np.mean(list(per_line.values()))), 2) if per_line else None,
        "lines": len(per_line),
    }
    return summary, per_line


def loudness(path: Path) -> dict:
    """EBU R128 of a file's audio with ffmpeg's ebur128 filter: integrated loudness (LUFS), loudness range (LU)
    and true peak (dBTP)."""
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    proc = run(
        [
            ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-i",
            ffmpeg_input(path),
            "-map",
            "0:a:0",
            "-af",
            "ebur128=peak=true",
            "-f",
            "null",
            "-",
        ],  # fmt: skip
        f"measuring the loudness of {path}",
    )
    summary = proc.stderr[proc.stderr.rfind("Summary:") :]

    def figure(label: str) -> float | None:
        found = re.search(rf"{label}:\s*(-?inf|-?[\d.]+)", summary)
        return None if not found or "inf" in found.group(1) else float(found.group(1))

    integrated = figure("I")
    if integrated is not None and integrated <= -70.0:  # R128's absolute gate: nothing above it, i.e. silence
        integrated = None
    return {"integrated_lufs": integrated, "range_lu": figure("LRA"), "true_peak_dbtp": figure("Peak")}


def frame_envelope(audio: np.ndarray, rate: int, fps: float, frames: int) -> np.ndarray:
    """Loudness of the audio per video frame (dB RMS, floored 40 dB under the peak): what a speaking mouth
    follows. Deliberately simpler than, and independent of, the lipsync stage's own mouth drive."""
    hop = rate / fps
    out = np.zeros(frames, np.float32)
    for t in range(frames):
        piece = audio[int(t * hop) : int((t + 1) * hop)]
        out[t] = 10 * np.log10(float(np.mean(piece.astype(np.float64) ** 2)) + 1e-10) if piece.size else -100.0
    peak = float(np.percentile(out, 99)) if frames else 0.0
    return np.maximum(out, peak - 40.0)


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 5 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return None
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def lip_sync(
    mouth: np.ndarray, envelope: np.ndarray, fps: float, spans: dict[int, tuple[float, float]]
) -> tuple[dict, dict[int, float | None]]:
    """How well mouth opening (per frame, NaN without a face) follows the audio envelope: Pearson correlation
    over the frames with a face, the lag that correlates best (a steady offset shows here), the share of frames
    with no face, and the correlation over each line."""
    n = min(len(mouth), len(envelope))
    mouth, envelope = mouth[:n].astype(np.float64), envelope[:n].astype(np.float64)
    by_lag = {}
    for lag in range(-LAG_FRAMES, LAG_FRAMES + 1):  # positive: the mouth moves after the sound
        a = mouth[lag:] if lag >= 0 else mouth[:lag]
        b = envelope[: n - lag] if lag >= 0 else envelope[-lag:]
        if (r := _corr(a, b)) is not None:
            by_lag[lag] = r
    per_line = {}
    for index, (start, end) in spans.items():
        first, last = int(start * fps), min(n, int(np.ceil(end * fps)))
        per_line[index] = None if last - first < 5 else _corr(mouth[first:last], envelope[first:last])
    best = max(by_lag, key=by_lag.__getitem__) if by_lag else None
    summary = {
        "correlation": None if 0 not in by_lag else round(by_lag[0], 4),
        "best_lag_ms": None if best is None else round(1000 * best / fps, 1),
        "best_lag_correlation": None if best is None else round(by_lag[best], 4),
        "no_face_frames": int(np.isnan(mouth).sum()),
        "no_face_share": round(float(np.isnan(mouth).mean()), 4) if n else None,
        "frames": n,
    }
    return summary, {k: None if v is None else round(v, 4) for k, v in per_line.items()}


def voice_similarity(
    source: dict[str, np.ndarray], dub: np.ndarray, rate: int, lines: Sequence[ScriptLine]
) -> dict[str, dict]:
    """CAM++ cosine similarity of each dubbed speaker (their lines cut from the dub voice) to the source speaker's
    embedding. A speaker with too little dubbed or source speech gets no figure and says why."""
    result: dict[str, dict] = {}
    for speaker in sorted({line.speaker for line in lines if line.text.strip()}):
        pieces = [dub[int(a * rate) : int(b * rate)] for a, b in (dub_span(x) for x in lines if x.speaker == speaker)]
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        seconds = round(len(audio) / rate, 2)
        if speaker not in source:
            result[speaker] = {"similarity": None, "dub_s": seconds, "note": "no source embedding (too little speech)"}
        elif seconds < speaker_embedding.MIN_SECONDS:
            result[speaker] = {"similarity": None, "dub_s": seconds, "note": "too little dubbed speech to compare"}
        else:
            similarity = speaker_embedding.cosine(source[speaker], speaker_embedding.embed(audio, rate))
            result[speaker] = {"similarity": round(similarity, 4), "dub_s": seconds}
    return result


# ---------------------------------------------------------------- the report


@dataclass
class Measurements:
    """What `quality_report` measured (with the other stages' help), for `build_report` to judge."""

    heard: Transcript | None = None  # the dub voice, transcribed back
    voice: dict[str, dict] | None = None  # voice_similarity()
    lipsync: dict | None = None  # lip_sync() summary plus what the lipsync stage reported
    lip_lines: dict[int, float | None] | None = None
    loudness: dict | None = None
    inputs: list[str] = field(default_factory=list)
    back_translated: dict[int, str] | None = None  # line -> what was heard (or the script) in the source language
    meaning_basis: str = "heard"  # what was translated back: "heard" (the dub heard back) or "script"
    foreign: dict[int, list[ForeignWord]] | None = None  # line -> its words of another language
    listener: dict | None = None  # what heard the dub back (backend, model, beam size...)
    casting: dict | None = None  # casting_summary(): the speakers, their speech and the voice each was cast with
    notes: dict[str, str] = field(default_factory=dict)  # check -> why it was not measured


def build_report(script: Script, measured: Measurements, limits: Thresholds, *, metric: str) -> QAReport:
    """Judge the measurements against the thresholds: sections, a row per line, and a flag per failure. `metric`
    scores what was heard back (the language's `metric` in config)."""
    lines = sorted(script.lines, key=lambda line: line.start)
    notes = measured.notes
    flags: list[QAFlag] = []
    rows = {
        line.index: LineQA(
            index=line.index,
            speaker=line.speaker,
            start=dub_span(line)[0],
            end=dub_span(line)[1],
            source_text=line.source_text,
            text=line.text,
            speed=line.speed,
            over_limit=over_limit(line, limits.max_speedup),
            fit=fit_actions(line, limits.max_speedup),
        )
        for line in lines
    }

    def flag(check: str, message: str, row: LineQA | None = None, value: float | None = None) -> None:
        flags.append(
            QAFlag(
                check=check,
                message=message,
                start=row.start if row else None,
                end=row.end if row else None,
                line=row.index if row else None,
                value=None if value is None else round(value, 4),
            )
        )
        if row is not None and check not in row.flags:
            row.flags.append(check)

    intelligibility_section: dict = {"note": notes.get("intelligibility", "not measured")}
    if measured.heard is not None:
        intelligibility_section, per_line = intelligibility(lines, measured.heard, get_metric(metric))
        if measured.listener:
            intelligibility_section["listener"] = measured.listener
        for index, figures in per_line.items():
            row = rows[index]
            row.heard, row.error_rate = figures["heard"], round(figures["error_rate"], 4)
            if row.error_rate > limits.max_error_rate:
                flag("intelligibility", f"heard {row.heard!r} for {row.text!r}", row, row.error_rate)

    speeds = [row.speed for row in rows.values() if row.speed is not None]
    over = [row.index for row in rows.values() if row.over_limit]
    for index in over:
        row = rows[index]
        flag("timing", f"does not fit its slot even at x{limits.max_speedup:g}: the end is cut", row, row.speed)
    timing_section = {
        "max_speedup": limits.max_speedup,
        "mean_speed": round(float(np.mean(speeds)), 4) if speeds else None,
        "max_speed": max(speeds, default=1.0),
        "sped_up": sum(s > 1.0 + 1e-6 for s in speeds),
        "over_limit": len(over),
        # lines per action fitting took (FIT_ACTIONS); "borrowed": either side
        "actions": {a: sum(a in row.fit for row in rows.values()) for a in FIT_ACTIONS},
        "borrowed": sum(any(a.startswith("borrowed") for a in row.fit) for row in rows.values()),
        "cut_s": round(sum(line.cut_s or 0.0 for line in lines), 3),
    }

    voice_section: dict = {"note": notes.get("voice", "not measured")}
    if measured.voice is not None:
        voice_section = {"speakers": measured.voice}
    if measured.casting is not None:
        voice_section.update(measured.casting)
        for speaker, cast in measured.casting["cast"].items():
            if cast.get("gender") and cast.get("voice_gender") and cast["gender"] != cast["voice_gender"]:
                first = next((r for r in rows.values() if r.speaker == speaker and r.text.strip()), None)
                named = " (named so)" if cast.get("reason", "").startswith("named") else ""
                flag(
                    "voice", f"{speaker} ({cast['gender']}) is dubbed with a {cast['voice_gender']} voice{named}", first
                )
            if cast.get("age_register") == "child" and cast.get("voice_register"):
                first = next((r for r in rows.values() if r.speaker == speaker and r.text.strip()), None)
                flag("voice", f"{speaker} speaks in a child's register: dubbed with an adult's voice, shifted", first)
    if measured.voice is not None:
        for speaker, figures in measured.voice.items():
            value = figures.get("similarity")
            if value is not None and value < limits.min_similarity:
                first = next((r for r in rows.values() if r.speaker == speaker and r.text.strip()), None)
                flag("voice", f"{speaker}'s dubbed voice is far from the original ({value:.2f})", first, value)
                if first is not None:  # one flag for the speaker; mark every line of theirs in the table
                    for row in rows.values():
                        if row.speaker == speaker and row.text.strip() and "voice" not in row.flags:
                            row.flags.append("voice")

    lipsync_section: dict = measured.lipsync or {"note": notes.get("lipsync", "not measured")}
    for index, value in (measured.lip_lines or {}).items():
        if index in rows:
            rows[index].lip_sync = value
            if value is not None and value < limits.min_lip_sync:
                flag("lipsync", f"the mouth does not follow the dub (r={value:.2f})", rows[index], value)

    loud_section: dict = measured.loudness or {"note": notes.get("loudness", "not measured")}
    if measured.loudness:
        loud_section = {**measured.loudness, "target_lufs": limits.loudness_target}
        integrated, peak = measured.loudness.get("integrated_lufs"), measured.loudness.get("true_peak_dbtp")
        if integrated is None:
            flag("loudness", "the mix is silent")
        elif abs(integrated - limits.loudness_target) > limits.loudness_tolerance_lu:
            flag(
                "loudness",
                f"integrated loudness {integrated:.1f} LUFS, target {limits.loudness_target:g}",
                None,
                integrated,
            )
        if peak is not None and peak > limits.max_true_peak_db:
            flag("loudness", f"true peak {peak:.1f} dBTP over {limits.max_true_peak_db:g}", None, peak)

    meaning_section: dict = {"note": notes.get("meaning", "not measured")}
    if measured.back_translated is not None:
        meaning_section, chrf = meaning(lines, measured.back_translated, basis=measured.meaning_basis)
        meaning_section["min_chrf"] = limits.min_meaning_chrf
        for index, value in chrf.items():
            row = rows[index]
            row.back_translation, row.meaning_chrf = measured.back_translated[index], value
            if value < limits.min_meaning_chrf:
                said = "heard" if measured.meaning_basis == "heard" else "the script"
                flag("meaning", f"{said} means {row.back_translation!r}, not {row.source_text!r} (chrF {value:.0f})",
                     row, value)  # fmt: skip

    language_section: dict = {"note": notes.get("language", "not measured")}
    if measured.foreign is not None:
        language_section = {"lines": sum(bool(words) for words in measured.foreign.values()), "words": {}}
        for index, words in measured.foreign.items():
            if words and index in rows:
                rows[index].foreign_words = [w.word for w in words]
                language_section["words"][str(index)] = [vars(w) for w in words]
                said = "; ".join(f"{w.word!r} ({w.reason})" for w in words)
                flag("language", f"words of another language: {said}", rows[index])

    inputs = list(measured.inputs)
    for warning in inputs:
        flag("input", warning)

    return QAReport(
        language=script.language,
        translator=script.translator,
        pivot=script.pivot,
        lines=len(lines),
        max_speed=timing_section["max_speed"],
        lines_over_limit=over,
        intelligibility=intelligibility_section,
        timing=timing_section,
        voice=voice_section,
        lipsync=lipsync_section,
        loudness=loud_section,
        meaning=meaning_section,
        wrong_language=language_section,
        inputs=inputs,
        thresholds={k: getattr(limits, k) for k in limits.__dataclass_fields__},
        line_qa=list(rows.values()),
        flags=sorted(flags, key=lambda f: (f.start is None, f.start or 0.0)),
    )


def dub_file(path: str | None) -> str:
    """A dub's voice or mix as the manifest names it; a subtitles-only run has none to measure."""
    if path is None:
        raise DubbingError("this run voiced nothing (subtitles only): there is no dub to measure")
    return path


def disabled_report(script: Script, limits: Thresholds, note: str = "QA off (qa.enabled)") -> QAReport:
    """The report of a run with QA off (qa.enabled false), or of one that voiced nothing (`note` says why): the
    timing the script itself records, no measurement."""
    off = dict.fromkeys(("intelligibility", "voice", "lipsync", "loudness", "meaning", "language"), note)
    return build_report(script, Measurements(notes=off), limits, metric="wer")  # nothing heard: never used


# ---------------------------------------------------------------- measuring a finished language from its files


def listen(
    layout: RunLayout,
    lang: str,
    outputs: LanguageOutputs,
    cfg: QAConfig,
    *,
    hear: Hear | None,
    translate_back: TranslateBack | None = None,
    keep_words: Collection[str] = (),
    listener: dict | None = None,
) -> Measurements:
    """What QA measures from the dub voice and the script alone: the voice heard back, each speaker's similarity,
    the meaning (what was heard, translated back to the source language) and words of another language. It needs
    no picture and no mix, so the flow runs it beside the lipsync render (step hear-back); `quality_report` adds
    the rest. `hear` None leaves out the back-transcription, `translate_back` None the meaning check; `keep_words`
    (the glossary's terms) are never taken for another language's; `listener` describes what `hear` is (ASR
    backend, model, beam...) for the report."""
    script = Script.model_validate_json((layout.out / outputs.script).read_text())
    transcript = Transcript.model_validate_json(layout.transcript.read_text())
    voice_audio, _ = media.read_audio(layout.out / dub_file(outputs.voice), ANALYSIS_RATE)
    measured = Measurements()
    if not cfg.back_transcribe:
        measured.notes["intelligibility"] = "back-transcription off (qa.back_transcribe)"
    elif hear is None:
        measured.notes["intelligibility"] = "back-transcription off (no transcriber given)"
    else:
        measured.heard, heard_info = back_transcribe(
            layout.out / dub_file(outputs.voice), len(voice_audio) / ANALYSIS_RATE, script.lines, lang, hear
        )
        measured.listener = {**(listener or {}), **heard_info}
    measured.voice = voice_similarity(source_embeddings(layout, transcript), voice_audio, ANALYSIS_RATE, script.lines)
    if not cfg.meaning:
        measured.notes["meaning"] = "meaning check off (qa.meaning)"
    elif translate_back is None:
        measured.notes["meaning"] = "meaning check off (no back-translator given)"
    else:
        measured.meaning_basis = "heard" if measured.heard is not None else "script"
        texts = (
            heard_per_line(script.lines, measured.heard)[0]
            if measured.heard is not None
            else {line.index: line.text for line in script.lines if line.text.strip()}
        )
        measured.back_translated, skipped = back_translate(texts, translate_back)
        if skipped:
            measured.notes["meaning"] = skipped
    if not cfg.wrong_language:
        measured.notes["language"] = "wrong-language check off (qa.wrong_language)"
    elif (unchecked := wrong_language_check(lang)) is not None:
        measured.notes["language"] = f"not checked: {unchecked}"
    else:
        measured.foreign = {
            line.index: foreign_words(line.text, lang, source=script.source_language, keep=keep_words)
            for line in script.lines
            if line.text.strip()
        }
    return measured


def quality_report(
    layout: RunLayout,
    lang: str,
    outputs: LanguageOutputs,
    cfg: QAConfig,
    limits: Thresholds,
    *,
    metric: str,
    hear: Hear | None,
    mouth: Mouth | None,
    translate_back: TranslateBack | None = None,
    keep_words: Collection[str] = (),
    drawn: Drawn | None = None,
    listener: dict | None = None,
    heard: Measurements | None = None,
) -> QAReport:
    """The QA of one finished language, from its files alone (so `dub eval` recomputes exactly what the run
    wrote): what `listen` measures (or `heard`, what it measured already), then timing, lipsync, loudness and
    input warnings. `mouth` None leaves out the lipsync check; `drawn` reads the mouths the renderer drew into a
    lipsynced picture (else, or when it has none, `mouth` tracks the picture)."""
    script = Script.model_validate_json((layout.out / outputs.script).read_text())
    transcript = Transcript.model_validate_json(layout.transcript.read_text())
    if heard is None:
        heard = listen(
            layout, lang, outputs, cfg, hear=hear, translate_back=translate_back, keep_words=keep_words,
            listener=listener,
        )  # fmt: skip
    measured = replace(heard, notes=dict(heard.notes), inputs=input_warnings(layout, transcript))
    video = layout.out / outputs.video if outputs.video else None
    if video is None or not video.exists():
        measured.notes["lipsync"] = "no video output"
    elif not cfg.lipsync:
        measured.notes["lipsync"] = "lipsync check off (qa.lipsync)"
    elif mouth is None:
        measured.notes["lipsync"] = "lipsync check off (no face tracker given)"
    else:
        voice_audio, _ = media.read_audio(layout.out / dub_file(outputs.voice), ANALYSIS_RATE)
        reanimated = layout.picture(lang).exists()
        measured.lipsync, measured.lip_lines = lipsync_measure(
            layout, video, voice_audio, script.lines, transcript, mouth, reanimated=reanimated,
            picture=layout.picture(lang), drawn=drawn,
        )  # fmt: skip
    measured.loudness = loudness(layout.out / dub_file(outputs.audio))
    measured.casting = casting_summary(layout, lang, transcript)
    return build_report(script, measured, limits, metric=metric)


CAST_FIELDS = (
    "voice", "gender", "f0_hz", "age_register", "register_reason", "voice_register", "voice_language", "voice_gender",
    "reason", "candidates",
)  # fmt: skip


def casting_summary(layout: RunLayout, lang: str, transcript: Transcript) -> dict | None:
    """How many people the source has, each one's total speech, and the voice each was cast with and why (from
    LANG/voices.json; None when the run has none)."""
    path = layout.voices(lang)
    if not path.exists():
        return None
    voices = {k: VoiceMatch.model_validate(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    speech = {
        s: round(sum(u.duration for u in transcript.utterances if u.speaker == s), 1) for s in transcript.speakers
    }
    cast = {s: {"voice": m.label, **{k: getattr(m, k) for k in CAST_FIELDS if k != "voice"}} for s, m in voices.items()}
    return {"speaker_count": len(transcript.speakers), "speech_s": speech, "cast": cast}


HEARING = TypeAdapter(Measurements)
"""`listen`'s measurements as JSON (LANG/hearing.json): the hear-back step's file, which the report step reads."""


def back_translate(texts: dict[int, str], translate_back: TranslateBack) -> tuple[dict[int, str] | None, str]:
    """Each line's text in the source language, all lines in one call; (None, why) when the back-translator
    could not be built or failed. Lines with nothing in them are not sent."""
    indices = [i for i, text in texts.items() if text.strip()]
    try:
        out = translate_back([texts[i] for i in indices]) if indices else []
    except (DubbingError, OSError, ImportError, RuntimeError) as error:
        return None, f"meaning check skipped: no back-translator ({error})"
    if len(out) != len(indices):
        return None, f"meaning check skipped: the back-translator gave {len(out)} lines for {len(indices)}"
    return dict(zip(indices, out, strict=True)), ""


def listening_pieces(
    lines: Sequence[ScriptLine], duration_s: float, max_s: float = LISTEN_MAX_S, pad_s: float = LISTEN_PAD_S
) -> list[tuple[float, float]]:
    """The stretches of the dub to hear back: consecutive lines grouped up to `max_s` (`listening_windows`), each
    cut to its lines' dub with `pad_s` around it, never past halfway to the next group: the silence between lines
    is not transcribed."""
    spans = sorted(dub_span(line) for line in lines if line.text.strip())
    pieces = []
    for start, end in listening_windows(lines, duration_s, max_s=max_s):
        inside = [(a, b) for a, b in spans if start <= a < end] or [(start, end)]
        first, last = min(a for a, _ in inside), max(b for _, b in inside)
        piece = (round(max(start, first - pad_s), 3), round(min(end, last + pad_s), 3))
        if piece[1] > piece[0]:
            pieces.append(piece)
    return pieces


def back_transcribe(
    audio: Path, duration_s: float, lines: Sequence[ScriptLine], lang: str, hear: Hear
) -> tuple[Transcript, dict]:
    """The dub voice (the file `audio`) heard back in pieces (`listening_pieces`, all in one `hear` call), word
    times on the dub's timeline, and what was heard (pieces, seconds). The lines of a several-line piece in which
    nothing was heard are heard again each on its own (one more call for all such lines): whisper base gave
    nothing for 8 s of two Dutch MBROLA lines that it heard well one at a time, and stopped after the first of
    two French lines in one piece."""
    spans = sorted(dub_span(line) for line in lines if line.text.strip())
    pieces = listening_pieces(lines, duration_s)
    found = [u for u in hear(audio, lang, pieces).utterances if u.text.strip()] if pieces else []
    again = []
    for start, end in pieces:
        inside = [(a, b) for a, b in spans if start <= a < end]
        if len(inside) < 2:
            continue
        for i, (a, b) in enumerate(inside):  # padded, but never into the neighbouring lines
            lo = inside[i - 1][1] if i else start
            hi = inside[i + 1][0] if i + 1 < len(inside) else end
            if not _heard_in(found, a, b):
                again.append((round(max(lo, a - 0.25), 3), round(min(hi, b + 0.25), 3)))
    again = _disjoint(again)
    if again:
        found += [u for u in hear(audio, lang, again).utterances if u.text.strip()]
    found.sort(key=lambda u: u.start)
    heard_s = sum(b - a for a, b in pieces) + sum(b - a for a, b in again)
    info = {"pieces": len(pieces) + len(again), "heard_s": round(heard_s, 2), "dub_s": round(duration_s, 2)}
    return Transcript(language=lang, duration_s=round(duration_s, 3), utterances=found), info


def _heard_in(found: Sequence[Utterance], start: float, end: float) -> bool:
    """Whether a word (or, without word times, an utterance) heard lies partly in start..end."""
    spans = [(w.start, w.end) for u in found for w in u.words] + [(u.start, u.end) for u in found if not u.words]
    return any(a < end and b > start for a, b in spans)


def _disjoint(pieces: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pieces in order, each starting no earlier than the previous one ends (neighbouring lines' pads overlap)."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(pieces):
        start = max(start, out[-1][1]) if out else start
        if end > start:
            out.append((start, end))
    return out


def source_embeddings(layout: RunLayout, transcript: Transcript) -> dict[str, np.ndarray]:
    """Each source speaker's CAM++ embedding: diarization's profile when written, else embedded here from the
    analysis audio over the speaker's utterances."""
    if layout.speaker_profiles.exists():
        profiles = json.loads(layout.speaker_profiles.read_text())
        found = {p["speaker"]: np.asarray(p["embedding"], np.float32) for p in profiles if p.get("embedding")}
        if found:
            return found
    samples, rate = media.read_audio(layout.analysis_wav, ANALYSIS_RATE)
    result = {}
    for speaker in transcript.speakers:
        pieces = [
            samples[int(u.start * rate) : int(u.end * rate)] for u in transcript.utterances if u.speaker == speaker
        ]
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        if len(audio) >= speaker_embedding.MIN_SECONDS * rate:
            result[speaker] = speaker_embedding.embed(audio, rate)
    return result


def input_warnings(layout: RunLayout, transcript: Transcript) -> list[str]:
    """What the source-side stages warned about: ASR/diarization, and the lipsync stage's input checks."""
    warnings = list(transcript.warnings)
    if layout.faces_json.exists():
        faces = FaceTracks.model_validate_json(layout.faces_json.read_text())
        warnings += [check.message for check in faces.checks]
    return warnings


def lipsync_measure(
    layout: RunLayout,
    video: Path,
    voice: np.ndarray,
    lines: Sequence[ScriptLine],
    transcript: Transcript,
    mouth: Mouth,
    *,
    reanimated: bool,
    picture: Path | None = None,
    drawn: Drawn | None = None,
) -> tuple[dict, dict[int, float | None]]:
    """Mouth opening of the dubbed picture against the dub voice (at ANALYSIS_RATE); with the same figure for the
    source picture and speech as a baseline when the source's faces were tracked. Where the mouths come from is
    in `mouth_source`: a re-animated `picture` has the mouths its renderer drew (`drawn`, saved when rendering:
    "renderer"), else the dubbed video is tracked again ("tracked", `mouth_note` says why); a dub that kept the
    source picture (not `reanimated`) has the source's landmarks ("source landmarks"), reused instead of tracking
    it again."""
    npz = layout.faces_npz
    source = None  # the source's landmarks, read once: the dub's own when it kept the source picture
    origin: dict = {}
    if reanimated:
        found = None
        if drawn is None:
            origin["mouth_note"] = "no renderer data reader given"
        elif picture is None:
            origin["mouth_note"] = "no lipsynced picture named"
        else:
            try:
                found = drawn(picture)
            except DubbingError as error:
                origin["mouth_note"] = str(error)
        if found is not None:
            gap, fps, renderer = found
            origin["mouth_source"] = f"renderer ({renderer})"
        else:
            gap, fps = mouth(video, None)
            origin["mouth_source"] = "tracked"
    elif not npz.exists():
        gap, fps = mouth(video, None)
        origin["mouth_source"] = "tracked"
    else:
        gap, fps = source = mouth(None, npz)
        origin["mouth_source"] = "source landmarks"
    envelope = frame_envelope(voice, ANALYSIS_RATE, fps, len(gap))
    summary, per_line = lip_sync(gap, envelope, fps, {line.index: dub_span(line) for line in lines})
    summary["lipsync_applied"] = reanimated
    summary.update(origin)
    if npz.exists() and layout.analysis_wav.exists():
        source_gap, source_fps = source or mouth(None, npz)
        samples, _ = media.read_audio(layout.analysis_wav, ANALYSIS_RATE)
        spans = {i: (u.start, u.end) for i, u in enumerate(transcript.utterances)}
        source_envelope = frame_envelope(samples, ANALYSIS_RATE, source_fps, len(source_gap))
        baseline, _ = lip_sync(source_gap, source_envelope, source_fps, spans)
        summary["source_correlation"] = baseline["correlation"]
    return summary, per_line
