"""Machine translation: source lines to target-language lines, one out for every one in, length-aware.

Backends implement `Translator` (translate, and shorten for lines that will not fit their slot):
`apertium` (Debian, offline), `bergamot` (English<->Portuguese, offline), `transformers` (Opus-MT, NLLB,
M2M100 from the Hugging Face cache) and `openai-compatible` (any chat-completions server). Two backends chain
through a pivot language where one has no direct pair. `get_translator(name, source=..., target=..., model=...)`
picks one backend; `translator_for(cfg, source, target)` builds what a language config asks for, glossary
and orthography fixes included. `isochrony` estimates spoken length and shortens lines that will not fit.
"""

from __future__ import annotations

import logging
from typing import Any

from dubbing.backends import pick
from dubbing.config import TranslateConfig
from dubbing.translate import isochrony
from dubbing.translate.apertium import APERTIUM_MODES, APERTIUM_ROUTES, ApertiumTranslator
from dubbing.translate.base import Glossary, LanguagePairError, ShortenRequest, Translator, finish, translate_groups
from dubbing.translate.bergamot import BERGAMOT_MODELS, BergamotTranslator
from dubbing.translate.condense import condense_requests
from dubbing.translate.hub import HubTranslator
from dubbing.translate.llm import OpenAICompatibleTranslator

__all__ = [
    "APERTIUM_MODES",
    "APERTIUM_ROUTES",
    "BACKENDS",
    "ChainTranslator",
    "ConfiguredTranslator",
    "ShortenRequest",
    "Translator",
    "available_routes",
    "fit_to_slots",
    "isochrony",
    "shorter_after_synthesis",
    "get_translator",
    "translator_for",
]

log = logging.getLogger(__name__)

BACKENDS: dict[str, type] = {
    "apertium": ApertiumTranslator,
    "bergamot": BergamotTranslator,
    "transformers": HubTranslator,
    "openai-compatible": OpenAICompatibleTranslator,
}
# Options each backend accepts beyond source, target and model.
_OPTIONS = {
    "transformers": {"beams", "batch_size"},
    "openai-compatible": {
        "base_url",
        "api_key_env",
        "api_key_secret",
        "glossary",
        "formality",
        "timeout_s",
        "max_retries",
        "batch_size",
    },
}
# Backends that take instructions: the glossary and formality go to them, not through placeholders.
_INSTRUCTABLE = {"openai-compatible"}


def available_routes() -> str:
    """The offline pairs, for error messages (hub and LLM backends depend on what the user has)."""
    apertium = ", ".join(f"{s}->{t}" for s, t in APERTIUM_ROUTES)
    bergamot = ", ".join(f"{s}->{t}" for s, t in BERGAMOT_MODELS)
    return (
        f"apertium: {apertium}; bergamot: {bergamot}; transformers: any pair of a local Opus-MT/NLLB/M2M100 model; "
        "openai-compatible: any pair your server's model knows"
    )


def get_translator(backend: str, *, source: str, target: str, model: str | None = None, **options: Any) -> Translator:
    """One backend for one pair; options a backend does not take are ignored."""
    cls = pick(BACKENDS, backend, "translation")
    accepted = {k: v for k, v in options.items() if k in _OPTIONS.get(backend, set()) and v is not None}
    return cls(source=source, target=target, model=model, **accepted)


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
        out = self.inner.translate(protected)
        if len(out) != len(lines):
            raise RuntimeError(f"{self.name} returned {len(out)} lines for {len(lines)}")
        return [self._finish(s, t, r) for s, t, r in zip(lines, out, renderings, strict=True)]

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
    language (the config is per target; the source is detected), Apertium's direct route is used if it has one."""
    if source.split("-")[0] == target.split("-")[0]:  # re-voicing in the same language: nothing to translate
        return ConfiguredTranslator(IdentityTranslator(source=source, target=target), cfg.glossary)
    try:
        return _configured(cfg, source, target)
    except LanguagePairError as exc:
        if (source, target) not in APERTIUM_ROUTES:
            raise LanguagePairError(
                f"no translation route {source}->{target} with {cfg.backend}; available offline: {available_routes()}"
            ) from None
        log.warning("%s; using apertium for %s->%s instead", exc, source, target)
        return ConfiguredTranslator(ApertiumTranslator(source=source, target=target), cfg.glossary)


def _configured(cfg: TranslateConfig, source: str, target: str) -> ConfiguredTranslator:
    options = cfg.model_dump(
        include={"base_url", "api_key_env", "api_key_secret", "timeout_s", "max_retries", "beams", "formality"}
    )
    options["glossary"] = cfg.glossary
    if cfg.formality != "default" and cfg.backend not in _INSTRUCTABLE:
        log.warning("%s cannot be asked for %s address; translate.formality is ignored", cfg.backend, cfg.formality)
    if cfg.pivot and cfg.pivot not in (source, target):
        second_backend = cfg.pivot_backend or cfg.backend
        first = get_translator(cfg.backend, source=source, target=cfg.pivot, model=cfg.model, **options)
        second = get_translator(second_backend, source=cfg.pivot, target=target, model=cfg.pivot_model, **options)
        inner: Translator = ChainTranslator(first, second)
        instructable = cfg.backend in _INSTRUCTABLE and second_backend in _INSTRUCTABLE
    else:
        inner = get_translator(cfg.backend, source=source, target=target, model=cfg.model, **options)
        instructable = cfg.backend in _INSTRUCTABLE
    return ConfiguredTranslator(inner, cfg.glossary, placeholders=not instructable)


def fit_to_slots(
    translator: ConfiguredTranslator,
    sources: list[str],
    texts: list[str],
    *,
    starts: list[float],
    end_of_timeline: float,
    tts_backend: str,
    max_speedup: float,
    shorten: bool = True,
) -> list[isochrony.LineFit]:
    """Estimate each translated line's spoken length against its slot; shorten those that will not fit."""

    def ask(requests: list[ShortenRequest]) -> list[list[str]]:
        return translator.shorten(sources, requests)

    def keep(index: int, current: str, candidate: str) -> bool:
        return isochrony.faithful(current, candidate, translator.required_terms(sources[index]))

    return isochrony.fit_lines(
        texts,
        isochrony.slots(starts, end_of_timeline),
        language=translator.target,
        tts_backend=tts_backend,
        max_speedup=max_speedup,
        shorten=ask if shorten else None,
        keep=keep,
    )


def shorter_after_synthesis(
    translator: ConfiguredTranslator,
    sources: list[str],
    index: int,
    text: str,
    *,
    budget_s: float,
    natural_s: float,
    tts_backend: str,
) -> str | None:
    """A second chance once the voice stage has measured a line: `text` took `natural_s` at speed 1.0 and must
    fit `budget_s`. Candidates are timed by the estimate scaled to this voice's measured rate; None when no
    faithful shorter rendering exists."""
    if not text.strip() or natural_s <= budget_s:
        return None
    estimate = isochrony.estimate_seconds(text, translator.target, tts_backend)
    scale = natural_s / estimate if estimate else 1.0
    target_chars = max(8, int(len(text) * budget_s / natural_s))
    required = translator.required_terms(sources[index])
    choice = isochrony.choose_shorter(
        text,
        natural_s,
        budget_s,
        translator.shorten(sources, [ShortenRequest(index, text, target_chars)])[0],
        lambda c: isochrony.estimate_seconds(c, translator.target, tts_backend) * scale,
        lambda c: isochrony.faithful(text, c, required),
    )
    return choice.text if choice else None
