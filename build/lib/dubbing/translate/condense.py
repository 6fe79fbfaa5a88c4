"""Rule-based condensation of English source lines, for backends that cannot be asked for a shorter output.

Speech is full of words that carry little meaning (hesitations, discourse markers, hedges, asides); dropping
them from the SOURCE and translating again gives a shorter line that says the same thing. Each level removes
more; a level is only offered when it changed the line. Only English has rules: other sources get none.
"""

from __future__ import annotations

import re

from dubbing.translate.base import ShortenRequest, tidy

_I = re.IGNORECASE

# Level 1: hesitations, discourse markers, stutters: no content at all.
_FILLERS = [
    (re.compile(r"\b(?:u+h+m*|u+m+|e+r+m+|a+h+|hmm+|mm+)\b[,.]?\s*", _I), ""),
    (re.compile(r"^(?:well|so|oh|okay|ok|right|alright|now)\s*,\s*", _I), ""),
    (re.compile(r"(?:^|,)\s*(?:you know|i mean|you see|let's see|like)\s*,\s*", _I), " "),
    (re.compile(r",\s*(?:you know|i mean|like)(?=[,.!?]|$)", _I), ""),
    (re.compile(r"\b(\w+)\s+\1\b", _I), r"\1"),  # "I I think" -> "I think"
]
# Level 2: asides in brackets or dashes, hedges and intensifiers.
_ASIDES = [
    (re.compile(r"\s*\([^)]*\)"), ""),
    (re.compile(r"\s+[-–—]\s+[^-–—]+\s+[-–—](?=\s)"), ""),
    (
        re.compile(
            r"\b(?:actually|basically|essentially|really|truly|literally|honestly|frankly|seriously|totally|"
            r"definitely|certainly|obviously|clearly|simply|just|quite|pretty much|kind of|sort of|a little bit|"
            r"a bit|very)\s+",
            _I,
        ),
        "",
    ),
    (re.compile(r",\s*(?:right|okay|ok|isn't it|don't you think|you see)\s*(?=[?.!]|$)", _I), ""),
]
# Level 3: wordy phrasings with a shorter equivalent.
_PHRASES = [
    (re.compile(r"\bin order to\b", _I), "to"),
    (re.compile(r"\bat this point in time\b", _I), "now"),
    (re.compile(r"\bat the moment\b", _I), "now"),
    (re.compile(r"\bi think (?:that )?", _I), ""),
    (re.compile(r"\bi believe (?:that )?", _I), ""),
    (re.compile(r"\bit seems (?:that|like) ", _I), ""),
    (re.compile(r"\bis going to\b", _I), "will"),
    (re.compile(r"\bare going to\b", _I), "will"),
    (re.compile(r"\bam going to\b|\bi'm going to\b", _I), "I will"),
    (re.compile(r"\bdue to the fact that\b", _I), "because"),
    (re.compile(r"\bas a matter of fact,?\s*", _I), ""),
    (re.compile(r"\bwhat i want to say is(?: that)?\s*", _I), ""),
    (re.compile(r",?\s*\bin the first place\b", _I), ""),
    (re.compile(r",?\s*\bof course\b,?", _I), ""),
    (re.compile(r"\s+at all\b", _I), ""),
]


def _clean(text: str) -> str:
    text = re.sub(r"\s*,\s*(?=[,.!?])", "", text)  # a comma left before other punctuation
    text = re.sub(r"^[\s,]+", "", text)
    text = tidy(text)
    return text[:1].upper() + text[1:] if text else text


def _apply(text: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return _clean(text)


def condense(source: str, language: str = "en") -> list[str]:
    """Progressively shorter versions of `source` (mildest first), each different from the one before."""
    if language.split("-")[0] != "en" or not source.strip():
        return []
    out: list[str] = []
    text = source
    for patterns in (_FILLERS, _ASIDES, _PHRASES):
        condensed = _apply(text, patterns)
        if condensed and condensed != text and condensed != source:
            out.append(condensed)
            text = condensed
    return out


def condense_requests(lines: list[str], requests: list[ShortenRequest], language: str) -> list[list[str]]:
    """The condensed versions of each requested source line."""
    return [condense(lines[r.index], language) for r in requests]
