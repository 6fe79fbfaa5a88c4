"""What every translation backend shares: the protocol, glossary protection, and target orthography fixes."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dubbing.errors import DubbingError


@dataclass(frozen=True)
class ShortenRequest:
    """A line to render shorter: its position in the source lines, its current translation, a target length."""

    index: int
    current: str
    max_chars: int


class Translator(Protocol):
    """A translation backend. Its class also declares `Options` (its own config options, `translate.options`),
    `capabilities` ("offline": it works from what scripts/setup installs, no download or server; "instructions":
    the glossary and formality go to it as instructions, not placeholders) and `routes()`, the pairs it has."""

    name: str
    source: str
    target: str

    @property
    def pivot(self) -> str | None:
        """The intermediate language when the pair is chained, else None."""
        ...

    def translate(self, lines: list[str]) -> list[str]:
        """Translate each line; the result has exactly as many lines as the input (neighbours are context)."""
        ...

    def shorten(self, lines: list[str], requests: list[ShortenRequest]) -> list[list[str]]:
        """For each request, shorter renderings of `lines[request.index]` aiming at `request.max_chars`, most
        faithful first ([] when the backend has no way to make one). Batched: engines translate all at once."""
        ...


class TranslatorBackend(Translator, Protocol):
    """A registered backend class's instances (not a chain or a wrapper): the class also lists its pairs."""

    @staticmethod
    def routes() -> str:
        """The language pairs this backend has, for error messages."""
        ...


def _verbatim(text: str) -> Callable[[re.Match[str]], str]:
    """A replacement for `re.sub` that inserts `text` as it is (a string would have its backslashes read)."""
    return lambda _match: text


def translate_groups(groups: list[list[str]], translate: Callable[[list[str]], list[str]]) -> list[list[str]]:
    """Translate lists of lines in one call and give them back grouped as they came."""
    flat = [line for group in groups for line in group]
    out = iter(translate(flat) if flat else [])
    return [[next(out) for _ in group] for group in groups]


class LanguagePairError(DubbingError):
    """A backend has no route for a language pair (the message lists the ones it has)."""


class Glossary:
    """Source terms with a fixed rendering ("Prefect": "Prefect" keeps a name; "dub": "doblar" forces a word).

    Backends without a way to take instructions get each term swapped for a placeholder (ZX0, ZX1, ...)
    that both Apertium and Bergamot carry through unchanged, and swapped back afterwards."""

    PREFIX = "ZX"

    def __init__(self, terms: dict[str, str] | None = None) -> None:
        self.terms = dict(terms or {})
        ordered = sorted(self.terms, key=len, reverse=True)  # longest first: "New York Times" before "New York"
        self._pattern = (
            re.compile(r"(?<!\w)(" + "|".join(re.escape(t) for t in ordered) + r")(?!\w)", re.IGNORECASE)
            if ordered
            else None
        )
        self._lookup = {t.lower(): t for t in self.terms}

    def __bool__(self) -> bool:
        return bool(self.terms)

    def protect(self, text: str) -> tuple[str, list[str]]:
        """Replace glossary terms with placeholders; returns the text and each placeholder's rendering."""
        if self._pattern is None:
            return text, []
        renderings: list[str] = []

        def swap(match: re.Match) -> str:
            renderings.append(self.terms[self._lookup[match.group(1).lower()]])
            return f"{self.PREFIX}{len(renderings) - 1}"

        return self._pattern.sub(swap, text), renderings

    def restore(self, text: str, renderings: Sequence[str]) -> str:
        for i in reversed(range(len(renderings))):  # ZX10 before ZX1
            text = re.sub(rf"{self.PREFIX}\s?{i}(?!\d)", _verbatim(renderings[i]), text, flags=re.IGNORECASE)
        return text

    def required(self, source: str) -> list[str]:
        """Renderings that a translation of `source` must contain."""
        return self.protect(source)[1]


def tidy(line: str) -> str:
    """Collapse whitespace and drop the spaces some engines leave before punctuation."""
    line = re.sub(r"\s+([.,;:!?])", r"\1", line)
    return " ".join(line.split())


_QUESTION_START = re.compile(
    r",\s+(?=(?:do|does|did|can|could|would|will|shall|should|is|are|was|were|have|has|how|what|where|when|why|"
    r"who|which|right|ok|okay|eh)\b)",
    re.IGNORECASE,
)


def spanish_marks(source: str, text: str) -> str:
    """Spanish opens questions and exclamations with ¿ and ¡. Engines that skip them get them back: a question
    starts after the comma where the English one does ("Hi, how are you?"), counted from the end of the sentence
    (a shortened line may have lost leading clauses), else at the start of the sentence."""
    if "¿" in text or "¡" in text:
        return text
    sources, targets = _sentences(source), _sentences(text)
    if len(sources) != len(targets):  # sentence counts differ: leave the line as the engine wrote it
        return text
    return "".join(_open_sentence(src, sent) for src, sent in zip(sources, targets, strict=True))


def _open_sentence(src: str, sent: str) -> str:
    mark = {"?": "¿", "!": "¡"}.get(sent.rstrip()[-1:]) if sent.strip() else None
    if not mark:
        return sent
    split = _QUESTION_START.search(src) if mark == "¿" else None
    if split:
        commas_after = src[split.start() + 1 :].count(",")
        parts = sent.split(",")
        if len(parts) > commas_after + 1:
            k = len(parts) - 1 - commas_after
            return ",".join(parts[:k]) + ", " + mark + ",".join(parts[k:]).lstrip()
    lead = len(sent) - len(sent.lstrip())
    return sent[:lead] + mark + sent[lead:]


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])(?=\s)", text) if s]


def match_case(source: str, text: str) -> str:
    """A line that starts with a capital in the source starts with one in the translation."""
    if source[:1].isupper() and text[:1].islower():
        return text[0].upper() + text[1:]
    return text


_TRAILING_BREAK = re.compile(r"\s*(?:-+|\u2013|\u2014|\.{3}|\u2026)\s*$")


def split_trailing_break(line: str) -> tuple[str, str]:
    """A line broken off ("I -", "So..."), as (the words, the break). Small engines invent words for a bare
    break: Bergamot gives "I -" as "Eu - Eu" and "I..." as "Que bom que gostou...". The words are translated
    alone and the break put back."""
    match = _TRAILING_BREAK.search(line)
    if not match or not line[: match.start()].strip():
        return line, ""
    return line[: match.start()], match.group(0).rstrip()


def finish(source: str, text: str, target: str) -> str:
    """The orthography fixes applied to every backend's output."""
    text = tidy(text)
    if not text:
        return text
    if not source.rstrip().endswith(",") and text.endswith(","):  # Bergamot's "Hello" -> "Olá,"
        text = text[:-1]
    text = match_case(source.strip(), text)
    if target.split("-")[0] == "es":
        text = spanish_marks(source.strip(), text)
    return text
