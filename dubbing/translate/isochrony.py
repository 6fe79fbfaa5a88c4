"""Length awareness: how long a translated line will take to speak, and whether it fits its slot.

A line's slot runs from its start to the next line's start (or the end of the media), the same window the
timing stage fits clips into; the voice stage may speed speech up by at most `max_speedup`. A line whose
estimate exceeds slot x max_speedup is flagged, and `fit_lines` asks the translator for shorter renderings.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from dubbing.translate.base import ShortenRequest

# Characters (not counting spaces; punctuation counts, since it makes pauses) spoken per second at speed 1.0,
# per TTS backend and language. Measured with benchmarks/calibrate_speech_rate.py on 2026-11-24: each backend
# spoke 15 everyday sentences per language through the TTS stage (dubbing.tts, silence trimmed there) with the
# voice a run uses by default (espeak-ng at 165 words per minute with voices en-us, es, pt-br, fr, it, de, ca and
# es for gl; Kokoro-82M int8 with jm_kumo; Piper joe-en); rate = total characters / total seconds. Sentences:
# the hand-written references of benchmarks/data/mt_en.tsv for es/pt, the English sources, Apertium renderings
# for ca/gl/fr/it, hand-written German. Characters predicted a single line's length within a median 3-9%
# (syllables: 3-12%). Voices differ: Kokoro's jf_alpha spoke Spanish 8% faster than jm_kumo. espeak es, pt, it
# were measured again once they had tuned voices and rates (MBROLA mb-es1 140, mb-br4 140, mb-it4 120 wpm).
CHAR_RATES: dict[str, dict[str, float]] = {
    "espeak": {"en": 15.38, "es": 14.73, "pt": 12.52, "fr": 18.75, "it": 12.62, "de": 15.74, "ca": 14.72, "gl": 14.01},
    "kokoro": {"en": 15.48, "es": 12.66, "pt": 11.69, "fr": 16.33, "it": 12.79, "de": 13.16},
    "piper": {"en": 16.95},
}
# A language or backend that was not measured: the median of the measured rates.
DEFAULT_RATE = 14.5

_VOWELS = "aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ"
_VOWEL_GROUP = re.compile(f"[{_VOWELS}]+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_DIGITS = re.compile(r"\d+")


def count_syllables(text: str) -> int:
    """Vowel groups per word, at least one per word: a crude but language-neutral syllable count.

    Digits are spoken as words, so each digit counts as two syllables."""
    total = 0
    for word in _WORD.findall(text.lower()):
        digits = sum(len(d) for d in _DIGITS.findall(word))
        letters = _DIGITS.sub("", word)
        groups = len(_VOWEL_GROUP.findall(letters)) if letters else 0
        total += max(groups, 1 if letters else 0) + 2 * digits
    return total


def count_letters(text: str) -> int:
    """Letters and digits: what a TTS engine has to pronounce, without spaces and punctuation."""
    return sum(ch.isalnum() for ch in text)


def count_chars(text: str) -> int:
    """What the rates are measured in: characters other than whitespace."""
    return sum(not ch.isspace() for ch in text)


def char_rate(tts_backend: str, language: str) -> float:
    rates = CHAR_RATES.get(tts_backend, {})
    base = language.split("-")[0].lower()
    return rates.get(language) or rates.get(base) or DEFAULT_RATE


def estimate_seconds(text: str, language: str, tts_backend: str) -> float:
    """Spoken length of `text` at speed 1.0 with the given TTS backend (0 for text with nothing to say)."""
    if not count_letters(text):
        return 0.0
    return round(count_chars(unicodedata.normalize("NFC", text)) / char_rate(tts_backend, language), 3)


def slots(starts: Sequence[float], end_of_timeline: float) -> list[float]:
    """Each line's window: from its start to the next start, or to the end of the timeline."""
    limits = list(starts[1:]) + [end_of_timeline]
    return [round(max(limit - start, 1e-3), 3) for start, limit in zip(starts, limits, strict=True)]


@dataclass
class LineFit:
    """What the length pass found and did for one line (recorded in script.json)."""

    text: str
    estimated_s: float
    slot_s: float
    # "fits", "shortened" (a shorter rendering fits), "shortened_over" (the shortest still does not fit),
    # "over" (too long at the maximum speed-up and nothing shorter was found), "empty"
    action: str
    original_text: str | None = None  # the first translation, when it was replaced
    original_estimate_s: float | None = None
    candidates: int = 0
    notes: list[str] = field(default_factory=list)


Shortener = Callable[[list[ShortenRequest]], list[list[str]]]  # requests -> each one's candidates
Judge = Callable[[int, str, str], bool]  # (line index, current text, candidate) -> faithful enough to use
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def faithful(original: str, candidate: str, required: Sequence[str] = (), min_ratio: float = 0.4) -> bool:
    """A shorter rendering may drop words, not facts: every number and glossary term stays, and it keeps at
    least `min_ratio` of the characters (an n-best entry cut to a few words is not a translation)."""
    if count_chars(candidate) < min_ratio * count_chars(original):
        return False
    if sorted(_NUMBER.findall(original)) != sorted(_NUMBER.findall(candidate)):
        return False
    return all(term.lower() in candidate.lower() for term in required)


def fits(estimated_s: float, slot_s: float, max_speedup: float) -> bool:
    return estimated_s <= slot_s * max_speedup + 1e-6


def fit_lines(
    texts: Sequence[str],
    slot_seconds: Sequence[float],
    *,
    language: str,
    tts_backend: str,
    max_speedup: float,
    shorten: Shortener | None,
    keep: Judge | None = None,
) -> list[LineFit]:
    """Estimate every line; the lines that will not fit even at `max_speedup` go to `shorten` together (one
    batch: engines translate all candidates at once), and `choose_shorter` picks each one's replacement."""
    estimates = [estimate_seconds(t, language, tts_backend) for t in texts]
    results: list[LineFit] = []
    requests: list[ShortenRequest] = []
    for i, (text, slot_s, estimate) in enumerate(zip(texts, slot_seconds, estimates, strict=True)):
        ok = fits(estimate, slot_s, max_speedup)
        results.append(LineFit(text, estimate, slot_s, "empty" if not text.strip() else "fits" if ok else "over"))
        if results[-1].action == "over" and shorten is not None:
            requests.append(ShortenRequest(i, text, max(8, int(len(text) * slot_s * max_speedup / estimate))))
    if requests:
        for request, candidates in zip(requests, shorten(requests), strict=True):
            i = request.index
            judge = partial(keep or _faithful_enough, i, texts[i])
            results[i] = _shortened(results[i], candidates, max_speedup, language, tts_backend, judge)
    return results


def _shortened(
    line: LineFit,
    candidates: list[str],
    max_speedup: float,
    language: str,
    tts_backend: str,
    keep: Callable[[str], bool],
) -> LineFit:
    choice = choose_shorter(
        line.text,
        line.estimated_s,
        line.slot_s * max_speedup,
        candidates,
        lambda c: estimate_seconds(c, language, tts_backend),
        keep,
    )
    if choice is None:
        return LineFit(
            line.text, line.estimated_s, line.slot_s, "over", notes=[f"{len(candidates)} candidates, none usable"]
        )
    return LineFit(
        choice.text,
        choice.seconds,
        line.slot_s,
        "shortened" if choice.fits else "shortened_over",
        original_text=line.text,
        original_estimate_s=line.estimated_s,
        candidates=len(candidates),
        notes=choice.notes,
    )


@dataclass
class Choice:
    text: str
    seconds: float
    fits: bool
    notes: list[str]


def choose_shorter(
    text: str,
    current_s: float,
    budget_s: float,
    candidates: Sequence[str],
    seconds: Callable[[str], float],
    keep: Callable[[str], bool],
) -> Choice | None:
    """The rendering to use instead of `text` (which takes `current_s`, more than `budget_s`), or None.

    Candidates come in the backend's order of preference (least condensed or best scored first); among those
    `keep` accepts as faithful and that are shorter, the first that fits the budget wins, so a line is cut no
    more than it needs; when none fits, the shortest one is taken."""
    unique = [c for c in dict.fromkeys(c.strip() for c in candidates) if c and c != text]
    kept = [c for c in unique if keep(c)]
    shorter = [(c, s) for c, s in ((c, seconds(c)) for c in kept) if s < current_s]
    notes = [f"{len(unique)} shorter candidates, {len(kept)} kept as faithful"]
    fitting = [(c, s) for c, s in shorter if s <= budget_s + 1e-6]
    if fitting:
        return Choice(*fitting[0], True, notes)
    if shorter:
        best, best_s = min(shorter, key=lambda pair: pair[1])
        return Choice(best, best_s, False, notes + [f"the shortest still needs {best_s / budget_s:.2f}x the budget"])
    return None


def _faithful_enough(index: int, original: str, candidate: str) -> bool:
    return faithful(original, candidate)
