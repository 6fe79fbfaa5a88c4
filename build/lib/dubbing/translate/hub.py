"""Hugging Face seq2seq translation: MarianMT/Opus-MT, NLLB-200 and M2M100, batched, with n-best alternatives.

Weights come from the model store (`models.resolve("opus-mt-en-de")`, read from the local Hugging Face cache) or
a local folder; hubs are not reached at run time. The language codes each family needs are set here: NLLB's
FLORES codes (`spa_Latn`) and M2M100's plain codes, both as the forced first decoder token.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from pydantic import Field

from dubbing import models
from dubbing.backends import NoOptions
from dubbing.errors import DubbingError
from dubbing.translate.base import LanguagePairError, ShortenRequest, translate_groups
from dubbing.translate.condense import condense_requests

log = logging.getLogger(__name__)

# ISO 639-1 -> FLORES-200 codes used by NLLB.
NLLB_CODES = {
    "en": "eng_Latn",
    "es": "spa_Latn",
    "pt": "por_Latn",
    "fr": "fra_Latn",
    "it": "ita_Latn",
    "de": "deu_Latn",
    "ca": "cat_Latn",
    "gl": "glg_Latn",
    "ro": "ron_Latn",
    "nl": "nld_Latn",
    "pl": "pol_Latn",
    "ru": "rus_Cyrl",
    "uk": "ukr_Cyrl",
    "ja": "jpn_Jpan",
    "zh": "zho_Hans",
    "ko": "kor_Hang",
    "ar": "arb_Arab",
    "hi": "hin_Deva",
    "tr": "tur_Latn",
    "sv": "swe_Latn",
    "eu": "eus_Latn",
    "eo": "epo_Latn",
}
DEFAULT_BATCH = 16
MAX_NEW_TOKENS = 256


def nllb_code(lang: str) -> str:
    base = lang.split("-")[0].lower()
    if "_" in lang:  # already a FLORES code
        return lang
    try:
        return NLLB_CODES[base]
    except KeyError:
        raise LanguagePairError(
            f"no NLLB code known for {lang!r}; known: {', '.join(sorted(NLLB_CODES))} (or pass a FLORES code)"
        ) from None


def default_model(source: str, target: str) -> str:
    """The registry's Opus-MT model for a pair, else the multilingual NLLB."""
    name = f"opus-mt-{source}-{target}"
    return name if name in models.REGISTRY else "nllb-200-distilled-600m"


def _model_path(model: str) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if model in models.REGISTRY:
        return models.resolve(model)
    hub = ", ".join(n for n, s in models.REGISTRY.items() if s.task == "mt")
    raise DubbingError(f"translation model {model!r} is neither a folder nor a known model; known: {hub}")


@cache
def _load(path: str):
    """Load tokenizer and model once per process (CPU, eval mode)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    torch.set_grad_enabled(False)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


class HubTranslator:
    """A transformers seq2seq model; `model` is a registry name or a local folder."""

    name = "transformers"
    capabilities: frozenset[str] = frozenset()
    pivot = None

    class Options(NoOptions):
        beams: int = Field(4, ge=1, le=16)  # beam search width
        batch_size: int = Field(DEFAULT_BATCH, ge=1, le=256)  # lines per forward pass

    @staticmethod
    def routes() -> str:
        """The pairs it translates, for error messages."""
        return "any pair of a local Opus-MT/NLLB/M2M100 model"

    def __init__(
        self,
        *,
        source: str,
        target: str,
        model: str | None = None,
        beams: int = 4,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self.source, self.target = source, target
        self.model_name = model or default_model(source, target)
        self.tokenizer, self.model = _load(str(_model_path(self.model_name)))
        self.beams, self.batch_size = beams, batch_size
        self.family = self._family()
        self._prepare_languages()

    def _family(self) -> str:
        kind = type(self.tokenizer).__name__.lower()
        if "nllb" in kind:
            return "nllb"
        if "m2m" in kind:
            return "m2m100"
        return "marian" if self.model.config.model_type == "marian" else self.model.config.model_type

    def _prepare_languages(self) -> None:
        """Set the source language and the forced first target token the family needs."""
        self.prefix, self.forced_bos = "", None
        tok = self.tokenizer
        if self.family == "nllb":
            tok.src_lang = nllb_code(self.source)
            self.forced_bos = tok.convert_tokens_to_ids(nllb_code(self.target))
        elif self.family == "m2m100":
            tok.src_lang = self.source.split("-")[0]
            try:
                self.forced_bos = tok.get_lang_id(self.target.split("-")[0])
            except KeyError:
                raise LanguagePairError(f"M2M100 has no language {self.target!r}") from None
        elif f">>{self.target}<<" in tok.get_vocab():  # multi-target Opus-MT (e.g. en-ROMANCE)
            self.prefix = f">>{self.target}<< "

    def _generate(self, texts: list[str], beams: int, n: int) -> list[str]:
        batch = self.tokenizer([self.prefix + t for t in texts], return_tensors="pt", padding=True, truncation=True)
        extra = {"forced_bos_token_id": self.forced_bos} if self.forced_bos is not None else {}
        out = self.model.generate(
            **batch, num_beams=max(beams, n), num_return_sequences=n, max_new_tokens=MAX_NEW_TOKENS, **extra
        )
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    def translate(self, lines: list[str]) -> list[str]:
        out = [""] * len(lines)
        todo = [i for i, line in enumerate(lines) if line.strip()]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            for i, text in zip(chunk, self._generate([lines[i] for i in chunk], self.beams, 1), strict=True):
                out[i] = text
        return out

    def shorten(self, lines: list[str], requests: list[ShortenRequest], n: int = 6) -> list[list[str]]:
        """The n-best list of the beam search (best scored first), then translations of the condensed source."""
        nbest = [self._generate([lines[r.index]], n, n) if lines[r.index].strip() else [] for r in requests]
        condensed = translate_groups(condense_requests(lines, requests, self.source), self.translate)
        return [a + b for a, b in zip(nbest, condensed, strict=True)]
