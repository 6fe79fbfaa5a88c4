"""Length awareness: how long a translated line will take to speak, and whether it fits its slot.

A line's slot runs from its start to the next line's start (or the end of the media), the same window the
timing stage fits clips into; the voice stage may speed speech up by at most `max_speedup`. A line whose
estimate exceeds slot x max_speedup is flagged, and `fit_lines` asks the translator for shorter renderings.
How long a text takes to speak is the caller's `estimate` (the TTS stage's, from the language's speech rate).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from dubbing.translate.base import ShortenRequest

Estimate = Callable[[str], float]  # text -> seconds to speak it at speed 1.0 (0 for text with nothing to say)


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


def faithful(
    original: str, candidate: str, required: Sequence[str] = (), *, estimate: Estimate, min_ratio: float = 0.4
) -> bool:
    """A shorter rendering may drop words, not facts: every number and glossary term stays, and it keeps at
    least `min_ratio` of the spoken length (an n-best entry cut to a few words is not a translation)."""
    if estimate(candidate) < min_ratio * estimate(original):
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
    estimate: Estimate,
    max_speedup: float,
    shorten: Shortener | None,
    keep: Judge | None = None,
) -> list[LineFit]:
    """Estimate every line; the lines that will not fit even at `max_speedup` go to `shorten` together (one
    batch: engines translate all candidates at once), and `choose_shorter` picks each one's replacement.
    `keep` judges a candidate faithful (default: `faithful` with no required terms)."""
    estimates = [estimate(t) for t in texts]
    results: list[LineFit] = []
    requests: list[ShortenRequest] = []
    for i, (text, slot_s, seconds) in enumerate(zip(texts, slot_seconds, estimates, strict=True)):
        ok = fits(seconds, slot_s, max_speedup)
        results.append(LineFit(text, seconds, slot_s, "empty" if not text.strip() else "fits" if ok else "over"))
        if results[-1].action == "over" and shorten is not None:
            requests.append(ShortenRequest(i, text, max(8, int(len(text) * slot_s * max_speedup / seconds))))
    if requests and shorten is not None:  # requests are only made for a shortener
        for request, candidates in zip(requests, shorten(requests), strict=True):
            i = request.index
            judge = partial(keep or partial(_faithful_enough, estimate), i, texts[i])
            results[i] = _shortened(results[i], candidates, max_speedup, estimate, judge)
    return results


def _shortened(
    line: LineFit,
    candidates: list[str],
    max_speedup: float,
    estimate: Estimate,
    keep: Callable[[str], bool],
) -> LineFit:
    choice = choose_shorter(line.text, line.estimated_s, line.slot_s * max_speedup, candidates, estimate, keep)
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


def _faithful_enough(estimate: Estimate, index: int, original: str, candidate: str) -> bool:
    return faithful(original, candidate, estimate=estimate)
