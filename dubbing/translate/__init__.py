"""Machine translation: source lines to target-language lines, one out for every one in, length-aware.

Backends implement `Translator` (translate, and shorten for lines that will not fit their slot): `apertium` (Debian,
offline), `bergamot` (English<->Portuguese, offline), `llama` (a local instruct model, any pair, offline),
`transformers` (Opus-MT, NLLB, M2M100 from the Hugging Face cache) and `openai-compatible` (any chat-completions
server). Each owns its options (`Options`, from `translate.options`) and declares its capabilities. Two backends
chain through a pivot language where one has no direct pair. `translator_for(cfg, source, target)` builds what a
language config asks for, glossary and orthography fixes included; `translate_script` translates a transcript into a
script, estimating each line's spoken length (the caller's `estimate`) and shortening lines that will not fit;
`shortener` is the voice stage's way back for a line that turned out too long once spoken.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from dubbing.backends import build, capable, config_problems
from dubbing.config import TranslateConfig
from dubbing.errors import DubbingError
from dubbing.translate import isochrony
from dubbing.translate.apertium import APERTIUM_MODES, APERTIUM_ROUTES, ApertiumTranslator
from dubbing.translate.base import (
    Glossary,
    LanguagePairError,
    ShortenRequest,
    Translator,
    TranslatorBackend,
    finish,
    split_trailing_break,
    translate_groups,
)
from dubbing.translate.bergamot import BergamotTranslator
from dubbing.translate.condense import condense_requests
from dubbing.translate.hub import HubTranslator
from dubbing.translate.isochrony import Estimate
from dubbing.translate.llama import LlamaTranslator
from dubbing.translate.llm import OpenAICompatibleTranslator
from dubbing.types import Script, ScriptLine, Transcript

__all__ = [
    "APERTIUM_MODES",
    "APERTIUM_ROUTES",
    "BACKENDS",
    "ChainTranslator",
    "ConfiguredTranslator",
    "Estimate",
    "LanguagePairError",
    "ShortenRequest",
    "Translator",
    "available_routes",
    "build_translator",
    "check",
    "fit_to_slots",
    "is_offline",
    "pivot_options",
    "isochrony",
    "shortener",
    "shorter_after_synthesis",
    "translate_script",
    "translator_for",
]

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[TranslatorBackend]] = {
    "apertium": ApertiumTranslator,
    "bergamot": BergamotTranslator,
    "transformers": HubTranslator,
    "llama": LlamaTranslator,
    "openai-compatible": OpenAICompatibleTranslator,
}


def available_routes() -> str:
    """Every backend's pairs, for error messages."""
    return "; ".join(f"{name}: {cls.routes()}" for name, cls in BACKENDS.items())


def build_translator(
    backend: str,
    *,
    source: str,
    target: str,
    model: str | None = None,
    options: Mapping[str, Any] | None = None,
    glossary: Mapping[str, str] | None = None,
) -> Translator:
    """One backend for one pair, built with its validated `options`; a backend that takes instructions is also
    given the glossary."""
    instructed = {"glossary": dict(glossary or {})} if capable(BACKENDS.get(backend), "instructions") else {}
    return build(BACKENDS, backend, "translation", options, source=source, target=target, model=model, **instructed)


class IdentityTranslator:
    """Source and target are the same language: lines pass through; shorter ones by condensing the source."""

    name = "identity"
    pivot = None

    def __init__(self, *, source: str, target: str, model: str | None = None) -> None:
        self.source, self.target = source, target

    def translate(self, lines: list[str]) -> list[str]:
        return list(lines)

    def shorten(self, lines: list[str], requests: list[ShortenRequest]) -> list[list[str]]:
        return condense_requests(lines, requests, self.source)


class ChainTranslator:
    """Two backends through a pivot language (English -> Portuguese by Bergamot -> Spanish by Apertium)."""

    def __init__(self, first: Translator, second: Translator) -> None:
        self.first, self.second = first, second
        self.name = f"{first.name}+{second.name}"
        self.source, self.target = first.source, second.target

    @property
    def pivot(self) -> str | None:
        return "+".join(p for p in (self.first.pivot, self.first.target, self.second.pivot) if p)

    def translate(self, lines: list[str]) -> list[str]:
        return self.second.translate(self.first.translate(lines))

    def shorten(self, lines: list[str], requests: list[ShortenRequest]) -> list[list[str]]:
        """The first backend's shorter renderings into the pivot, carried on by the second (all in one call)."""
        return translate_groups(self.first.shorten(lines, requests), self.second.translate)


class ConfiguredTranslator:
    """A backend (or chain) with the language's glossary and the target's orthography fixes around it."""

    def __init__(self, inner: Translator, glossary: dict[str, str] | None = None, *, placeholders: bool = True) -> None:
        self.inner = inner
        self.name, self.source, self.target = inner.name, inner.source, inner.target
        self.glossary = Glossary(glossary)
        self.placeholders = placeholders and bool(self.glossary)

    @property
    def pivot(self) -> str | None:
        return self.inner.pivot

    def _protect(self, lines: list[str]) -> tuple[list[str], list[list[str]]]:
        if not self.placeholders:
            return list(lines), [[] for _ in lines]
        pairs = [self.glossary.protect(line) for line in lines]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _finish(self, source: str, text: str, renderings: list[str]) -> str:
        return finish(source, self.glossary.restore(text, renderings) if renderings else text, self.target)

    def translate(self, lines: list[str]) -> list[str]:
        protected, renderings = self._protect(lines)
        words, breaks = zip(*map(split_trailing_break, protected), strict=True) if lines else ((), ())
        out = self.inner.translate(list(words))
        if len(out) != len(lines):
            raise RuntimeError(f"{self.name} returned {len(out)} lines for {len(lines)}")
        sources = [split_trailing_break(line)[0] for line in lines]
        return [self._finish(s, t, r) + b for s, t, b, r in zip(sources, out, breaks, renderings, strict=True)]

    def shorten(self, lines: list[str], requests: list[ShortenRequest]) -> list[list[str]]:
        protected, renderings = self._protect(lines)
        groups = self.inner.shorten(protected, requests)
        return [
            [self._finish(lines[r.index], c, renderings[r.index]) for c in group]
            for r, group in zip(requests, groups, strict=True)
        ]

    def required_terms(self, source: str) -> list[str]:
        """Glossary renderings a translation of `source` must keep (checked when choosing shorter lines)."""
        return self.glossary.required(source)


def translator_for(cfg: TranslateConfig, source: str, target: str) -> ConfiguredTranslator:
    """What a language's `translate` config asks for (a dubbing.config.TranslateConfig): one backend, or two
    through `pivot`; glossary and formality applied. When the configured backend has no route for this source
    language (the config is per target; the source is detected), the first offline backend with a route for the
    pair is used (Apertium's direct pairs)."""
    if source.split("-")[0] == target.split("-")[0]:  # re-voicing in the same language: nothing to translate
        return ConfiguredTranslator(IdentityTranslator(source=source, target=target), cfg.glossary)
    try:
        return _configured(cfg, source, target)
    except LanguagePairError as exc:
        for name, cls in BACKENDS.items():
            if not capable(cls, "offline"):
                continue
            try:
                fallback = build_translator(name, source=source, target=target)
            except LanguagePairError:
                continue
            log.warning("%s; using %s for %s->%s instead", exc, name, source, target)
            return ConfiguredTranslator(fallback, cfg.glossary)
        raise LanguagePairError(
            f"no translation route {source}->{target} with {cfg.backend}; available: {available_routes()}"
        ) from None


def pivot_options(cfg: TranslateConfig) -> Mapping[str, Any]:
    """The chain's second backend's options: `pivot_options`, else `options` when both legs are one backend."""
    if cfg.pivot_options is not None:
        return cfg.pivot_options
    return cfg.options if (cfg.pivot_backend or cfg.backend) == cfg.backend else {}


def _configured(cfg: TranslateConfig, source: str, target: str) -> ConfiguredTranslator:
    if cfg.pivot and cfg.pivot not in (source, target):
        second_backend = cfg.pivot_backend or cfg.backend
        first = build_translator(
            cfg.backend, source=source, target=cfg.pivot, model=cfg.model, options=cfg.options, glossary=cfg.glossary
        )
        second = build_translator(
            second_backend,
            source=cfg.pivot,
            target=target,
            model=cfg.pivot_model,
            options=pivot_options(cfg),
            glossary=cfg.glossary,
        )
        inner: Translator = ChainTranslator(first, second)
        instructed = capable(first, "instructions") and capable(second, "instructions")
    else:
        inner = build_translator(
            cfg.backend, source=source, target=target, model=cfg.model, options=cfg.options, glossary=cfg.glossary
        )
        instructed = capable(inner, "instructions")
    if cfg.post_edit:
        editor = build_translator(
            cfg.post_edit, source=source, target=target, options=cfg.post_edit_options, glossary=cfg.glossary
        )
        if not capable(editor, "post-edit"):
            raise DubbingError(f"translate.post_edit: {cfg.post_edit} cannot post-edit (llama can)")
        inner = PostEditedTranslator(inner, editor)
    return ConfiguredTranslator(inner, cfg.glossary, placeholders=not instructed)


class PostEditedTranslator:
    """A route's translation corrected by a model that reads the source beside it (Bergamot's draft, then the
    LLM); shorter renderings come from the editor."""

    def __init__(self, draft: Translator, editor: Any) -> None:
        self.draft, self.editor = draft, editor
        self.name = f"{draft.name}+{editor.name}"
        self.source, self.target = draft.source, draft.target

    @property
    def pivot(self) -> str | None:
        return self.draft.pivot

    def translate(self, lines: list[str]) -> list[str]:
        return self.editor.post_edit(lines, self.draft.translate(lines))

    def shorten(self, lines: list[str], requests: list[ShortenRequest]) -> list[list[str]]:
        return self.editor.shorten(lines, requests)


def is_offline(cfg: TranslateConfig) -> bool:
    """Whether every backend the config uses works from what scripts/setup installs (no download, no server): a
    missing pair is then a setup problem, not an optional extra."""
    names = {cfg.backend} | ({cfg.pivot_backend or cfg.backend} if cfg.pivot else set())
    return all(capable(BACKENDS.get(name), "offline") for name in names)


def check(cfg: TranslateConfig) -> list[str]:
    """Problems with a language's translate settings that `dub doctor` and the check before a run report: an
    unknown backend, options its backend does not take (each names its key), or a model this machine lacks."""
    legs: list[tuple[str, str, str, Mapping[str, Any], str | None]] = [
        ("translate.backend", "translate.options", cfg.backend, cfg.options, cfg.model)
    ]
    if cfg.pivot:
        pivot_backend = cfg.pivot_backend or cfg.backend
        legs.append(
            ("translate.pivot_backend", "translate.pivot_options", pivot_backend, pivot_options(cfg), cfg.pivot_model)
        )
    problems = [
        problem
        for backend_key, options_key, name, options, _ in legs
        for problem in config_problems(
            BACKENDS, name, "translation", options, backend_key=backend_key, options_key=options_key
        )
    ]
    for _, _, name, _, model in legs:  # a backend that can say what this machine lacks for it (model, runtime)
        missing = getattr(BACKENDS.get(name), "missing", None)
        problems += missing(model) if missing else []
    return problems


def translate_script(
    transcript: Transcript,
    target: str,
    cfg: TranslateConfig,
    *,
    estimate: Estimate,
    max_speedup: float,
    length_basis: str,
) -> Script:
    """Translate every utterance, then the length pass: estimate each line's spoken length (`estimate`), and where
    it will not fit its slot at `max_speedup`, take a shorter rendering (recorded per line)."""
    translated = translator_for(cfg, transcript.language, target)
    sources = [u.text for u in transcript.utterances]
    fits = fit_to_slots(
        translated,
        sources,
        translated.translate(sources),
        starts=[u.start for u in transcript.utterances],
        end_of_timeline=transcript.duration_s,
        estimate=estimate,
        max_speedup=max_speedup,
        shorten=cfg.length_aware,
    )
    lines = [
        ScriptLine(
            index=i,
            speaker=u.speaker,
            start=u.start,
            end=u.end,
            source_text=u.text,
            text=fit.text,
            estimated_s=fit.estimated_s,
            slot_s=fit.slot_s,
            length_action=fit.action,
            first_text=fit.original_text,
            notes=fit.notes,
        )
        for i, (u, fit) in enumerate(zip(transcript.utterances, fits, strict=True))
    ]
    return Script(
        source_language=transcript.language,
        language=target,
        translator=translated.name,
        pivot=translated.pivot,
        length_basis=length_basis,
        lines=lines,
    )


def shortener(
    script: Script, cfg: TranslateConfig, *, estimate: Estimate
) -> Callable[[ScriptLine, float, float], str | None]:
    """The voice stage's hook for a line it measured as too long: (line, seconds it must fit, seconds it takes now)
    -> a shorter rendering from the language's translator (rule-based condensation, n-best or an LLM rewrite), or
    None."""
    translated = translator_for(cfg, script.source_language, script.language)
    ordered = sorted(script.lines, key=lambda line: line.index)
    sources = [line.source_text for line in ordered]
    positions = {line.index: i for i, line in enumerate(ordered)}
    rewriter = _rewriter(cfg, translated)

    def shorten(line: ScriptLine, budget_s: float, natural_s: float) -> str | None:
        return shorter_after_synthesis(
            translated,
            sources,
            positions[line.index],
            line.text,
            budget_s=budget_s,
            natural_s=natural_s,
            estimate=estimate,
            rewriter=rewriter,
        )

    return shorten


def _rewriter(cfg: TranslateConfig, translated: ConfiguredTranslator) -> Callable[[], Translator | None] | None:
    """The LLM (`cfg.shorten_backend`) that rewrites a line shorter when the translator's own shorter renderings
    (rule-based condensation, n-best) do not fit: built on first use, since most runs never need it. None when the
    translator already is that model, or this machine lacks it (said once)."""
    name = cfg.shorten_backend
    if not name or name in translated.name.split("+") or name not in BACKENDS:
        return None
    built: list[Translator | None] = []

    def get() -> Translator | None:
        if not built:
            missing = getattr(BACKENDS[name], "missing", None)
            problems = missing(None) if missing else []
            if problems:
                log.warning("no %s to shorten lines with: %s", name, "; ".join(problems))
                built.append(None)
            else:
                model = build_translator(
                    name, source=translated.source, target=translated.target, glossary=cfg.glossary
                )
                built.append(ConfiguredTranslator(model, cfg.glossary, placeholders=False))
        return built[0]

    return get


def fit_to_slots(
    translator: ConfiguredTranslator,
    sources: list[str],
    texts: list[str],
    *,
    starts: list[float],
    end_of_timeline: float,
    estimate: Estimate,
    max_speedup: float,
    shorten: bool = True,
) -> list[isochrony.LineFit]:
    """Estimate each translated line's spoken length against its slot; shorten those that will not fit."""

    def ask(requests: list[ShortenRequest]) -> list[list[str]]:
        return translator.shorten(sources, requests)

    def keep(index: int, current: str, candidate: str) -> bool:
        return isochrony.faithful(current, candidate, translator.required_terms(sources[index]), estimate=estimate)

    return isochrony.fit_lines(
        texts,
        isochrony.slots(starts, end_of_timeline),
        estimate=estimate,
        max_speedup=max_speedup,
        shorten=ask if shorten else None,
        keep=keep,
    )


def copies_the_source(candidate: str, text: str, source: str) -> bool:
    """Whether a shorter rendering of `text` slipped back into the source language: most of the words it adds
    (a shortening mostly drops words) are the source's ('District Congressional, Washington, D.C. orientation.'
    for a French line, from a small LLM)."""
    added = _words(candidate) - _words(text)
    return bool(added) and 2 * len(added & _words(source)) > len(added)


def _words(text: str) -> set[str]:
    return {word.casefold() for word in re.findall(r"\w{3,}", text)}


def shorter_after_synthesis(
    translator: ConfiguredTranslator,
    sources: list[str],
    index: int,
    text: str,
    *,
    budget_s: float,
    natural_s: float,
    estimate: Estimate,
    rewriter: Callable[[], Translator | None] | None = None,
) -> str | None:
    """A second chance once the voice stage has measured a line: `text` took `natural_s` at speed 1.0 and must
    fit `budget_s`. Candidates are timed by the estimate scaled to this voice's measured rate; when none of the
    translator's fits, the `rewriter` (an LLM) is asked too. None when no faithful shorter rendering exists."""
    if not text.strip() or natural_s <= budget_s:
        return None
    estimated_s = estimate(text)
    scale = natural_s / estimated_s if estimated_s else 1.0
    request = ShortenRequest(index, text, max(8, int(len(text) * budget_s / natural_s)))
    required = translator.required_terms(sources[index])
    candidates = translator.shorten(sources, [request])[0]
    # a rendering far shorter than asked for has dropped meaning, not words (a small LLM's rewrites do)
    min_ratio = max(0.4, 0.75 * budget_s / natural_s)

    def in_target_language(candidate: str) -> bool:
        return not copies_the_source(candidate, text, sources[index])

    def choose() -> isochrony.Choice | None:
        return isochrony.choose_shorter(
            text,
            natural_s,
            budget_s,
            candidates,
            lambda c: estimate(c) * scale,
            lambda c: (
                in_target_language(c) and isochrony.faithful(text, c, required, estimate=estimate, min_ratio=min_ratio)
            ),
        )

    choice = choose()
    model = rewriter() if rewriter is not None and (choice is None or not choice.fits) else None
    if model is not None:
        candidates = candidates + model.shorten(sources, [request])[0]
        choice = choose()
    return choice.text if choice else None
